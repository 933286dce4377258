/* SPDX-License-Identifier: GPL-2.0 */
/* xdphooks: ABI shared by the rootlet (static backend), the freplace
 * dispatcher and the Python control plane. Mirrored by
 * xdphooks/abi.py (tests/test_abi.py checks that both agree).
 */
#ifndef XDPHOOKS_CONFIG_H
#define XDPHOOKS_CONFIG_H

#include <linux/types.h>

#define XDPHOOKS_MAX_SLOTS 128   /* per linked program; dispatcher config table */
#define XDPHOOKS_MAX_CHAIN 256   /* programs in one static chain: counters rows */
#define XDPHOOKS_MAX_SEGMENTS 32 /* linked programs joined by tail calls */
#define XDPHOOKS_MAGIC 0x58445048 /* 'XDPH' */
/* 2: counters in one per-CPU value; 3: each event carries the packet's first bytes */
#define XDPHOOKS_VERSION 3
#define XDPHOOKS_CONFIG_VERSION XDPHOOKS_VERSION

/* decision codes */
#define XDPH_CONTINUE 0
#define XDPH_RETURN 1
#define XDPH_LOG 2

/* policy index order */
#define XDPH_POL_ABORTED 0
#define XDPH_POL_DROP 1
#define XDPH_POL_PASS 2
#define XDPH_POL_TX 3
#define XDPH_POL_REDIRECT 4
#define XDPH_POL_UNKNOWN 5
#define XDPH_NR_POLICY 6

/* read-only configuration, held in `const volatile` rodata and set with
 * bpf_map__set_initial_value() before load */
struct xdphooks_config {
	__u32 magic;   /* XDPHOOKS_MAGIC */
	__u32 version; /* XDPHOOKS_VERSION */
	__u32 nr_slots;
	__u32 counters_enabled;
	__u32 events_enabled;
	__u8 policy[XDPHOOKS_MAX_SLOTS][XDPH_NR_POLICY];
};

/* value of map `xdph_counters` (PERCPU_ARRAY, ONE entry, key 0): every slot's
 * verdict counters in one per-CPU value, so a packet pays one map lookup (in the
 * root's prologue; once per segment of a long chain) and each slot one add at
 * verdicts[slot][verdict]. A slot's packets are the sum of its verdicts: every run
 * ends in exactly one. Both the rootlet and the dispatcher use this layout. */
#define XDPH_COUNTERS_KEY 0
struct xdphooks_counters {
	__u64 verdicts[XDPHOOKS_MAX_CHAIN][XDPH_NR_POLICY]; /* by policy index */
};

/* record in ring buffer `xdph_events` (RINGBUF, 64 KiB), written by xdph_log()
 * (xdphooks_log.h) when a slot's policy says `log`. The packet's first bytes come
 * with it, so `xdphooks events` can say which packet (addresses, ports) it was. */
#define XDPHOOKS_EVENT_SNAPLEN 128 /* Ethernet + 2 VLAN tags + IPv6 + TCP fit */
struct xdphooks_event {
	__u64 ts_ns;
	__u32 slot;
	__u32 retval;
	__u32 ifindex;
	__u32 flags;
	__u32 pkt_len; /* data_end - data: the packet (its first buffer if multi-buffer) */
	__u32 cap_len; /* bytes of it in pkt[], min(pkt_len, SNAPLEN) */
	__u8 pkt[XDPHOOKS_EVENT_SNAPLEN];
};

#define XDPHOOKS_EVENTS_SIZE (64 * 1024)

#endif /* XDPHOOKS_CONFIG_H */
