// SPDX-License-Identifier: GPL-2.0-only
/*
 * xdphooks dynamic (freplace) dispatcher.
 *
 * The root XDP program calls slot0 .. slot<N-1> in order. Each slot is a
 * global, never-inlined stub that xdphooks replaces with a component loaded
 * unmodified as BPF_PROG_TYPE_EXT. After every slot the per-slot verdict
 * policy (read-only data, fixed at load time) decides: continue, return the
 * verdict, or log an event and continue. The chain end returns XDP_PASS.
 *
 * Build one object per slot count: clang -DXDPHOOKS_DISPATCHER_SLOTS=N.
 * The config layout, counters and events are the same ABI as the static
 * rootlet (bpf/xdphooks_config.h).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "xdphooks_config.h"  /* the ABI shared with the rootlet and Python */

#ifndef XDPHOOKS_DISPATCHER_SLOTS
#define XDPHOOKS_DISPATCHER_SLOTS 8
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 64 || XDPHOOKS_DISPATCHER_SLOTS < 1
#error "XDPHOOKS_DISPATCHER_SLOTS must be 1..64"
#endif

/* Marker so tools can tell an xdphooks dispatcher and its capacity. */
#ifndef XDPH_INITIAL_NR_SLOTS
#define XDPH_INITIAL_NR_SLOTS 0 /* set by xdphooks before load */
#endif

const volatile __u32 xdph_dispatcher_slots = XDPHOOKS_DISPATCHER_SLOTS;

const volatile struct xdphooks_config xdph_config = {
	.magic = XDPHOOKS_MAGIC,
	.version = XDPHOOKS_CONFIG_VERSION,
	.nr_slots = XDPH_INITIAL_NR_SLOTS,
	.counters_enabled = 1,
	.events_enabled = 1,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPHOOKS_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct xdph_counter);
} xdph_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} xdph_events SEC(".maps");

/* An impossible value the stub "returns" unless replaced: the verifier cannot
 * fold it (volatile stack slot), and it never matches a real action. */
#define XDPH_STUB_RETVAL 31

/*
 * Placeholder for one component. It must:
 *  - be global and __noinline (a BTF FUNC the kernel can replace),
 *  - have a result the compiler cannot constant-fold,
 *  - declare that it may change packet data: since ~6.13 the verifier refuses
 *    an extension that changes packet data (bpf_xdp_adjust_head, ...) in place
 *    of a function that does not. A zero-length adjust_tail is a no-op.
 */
#define XDPH_SLOT(n)                                                         \
	__attribute__((noinline)) int slot##n(struct xdp_md *ctx)            \
	{                                                                    \
		volatile int ret = XDPH_STUB_RETVAL;                         \
		if (!ctx)                                                    \
			return XDP_ABORTED;                                  \
		if (ret == 0x7fffffff)                                       \
			bpf_xdp_adjust_tail(ctx, 0);                         \
		return ret;                                                  \
	}

static __always_inline int xdph_after(struct xdp_md *ctx, __u32 slot, int ret,
				      int *out)
{
	__u64 idx = (__u32)ret;
	__u8 decision;

	/* clamp in one 64-bit register, so the verifier sees the bound where
	 * the value is used (clang otherwise compares a copy) */
	asm volatile("" : "+r"(idx));
	if (idx > XDPH_NR_POLICY - 1)
		idx = XDPH_NR_POLICY - 1;
	asm volatile("" : "+r"(idx));

	if (xdph_config.counters_enabled) {
		struct xdph_counter *c = bpf_map_lookup_elem(&xdph_counters, &slot);

		if (c) {
			c->packets++;
			c->verdicts[idx]++;
		}
	}
	{
		__u64 off = (__u64)slot * XDPH_NR_POLICY + idx;

		asm volatile("" : "+r"(off));
		if (off >= XDPHOOKS_MAX_SLOTS * XDPH_NR_POLICY)
			return 0;
		decision = ((const volatile __u8 *)xdph_config.policy)[off];
	}
	if (decision == XDPH_LOG) {
		if (xdph_config.events_enabled) {
			struct xdph_event *e = bpf_ringbuf_reserve(&xdph_events, sizeof(*e), 0);

			if (e) {
				e->ts_ns = bpf_ktime_get_ns();
				e->slot = slot;
				e->retval = (__u32)ret;
				e->ifindex = ctx->ingress_ifindex;
				e->flags = 0;
				bpf_ringbuf_submit(e, 0);
			}
		}
		return 0;
	}
	if (decision == XDPH_RETURN) {
		*out = ret;
		return 1;
	}
	return 0;
}

#define XDPH_CALL(n)                                                         \
	if (xdph_config.nr_slots <= n)                                       \
		return XDP_PASS;                                             \
	ret = slot##n(ctx);                                                  \
	if (xdph_after(ctx, n, ret, &out))                                   \
		return out;

/* Slot stubs 0..63; only those below the slot count are defined. */
XDPH_SLOT(0)
#if XDPHOOKS_DISPATCHER_SLOTS > 1
XDPH_SLOT(1)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 2
XDPH_SLOT(2) XDPH_SLOT(3)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 4
XDPH_SLOT(4) XDPH_SLOT(5) XDPH_SLOT(6) XDPH_SLOT(7)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 8
XDPH_SLOT(8) XDPH_SLOT(9) XDPH_SLOT(10) XDPH_SLOT(11)
XDPH_SLOT(12) XDPH_SLOT(13) XDPH_SLOT(14) XDPH_SLOT(15)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 16
XDPH_SLOT(16) XDPH_SLOT(17) XDPH_SLOT(18) XDPH_SLOT(19)
XDPH_SLOT(20) XDPH_SLOT(21) XDPH_SLOT(22) XDPH_SLOT(23)
XDPH_SLOT(24) XDPH_SLOT(25) XDPH_SLOT(26) XDPH_SLOT(27)
XDPH_SLOT(28) XDPH_SLOT(29) XDPH_SLOT(30) XDPH_SLOT(31)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 32
XDPH_SLOT(32) XDPH_SLOT(33) XDPH_SLOT(34) XDPH_SLOT(35)
XDPH_SLOT(36) XDPH_SLOT(37) XDPH_SLOT(38) XDPH_SLOT(39)
XDPH_SLOT(40) XDPH_SLOT(41) XDPH_SLOT(42) XDPH_SLOT(43)
XDPH_SLOT(44) XDPH_SLOT(45) XDPH_SLOT(46) XDPH_SLOT(47)
XDPH_SLOT(48) XDPH_SLOT(49) XDPH_SLOT(50) XDPH_SLOT(51)
XDPH_SLOT(52) XDPH_SLOT(53) XDPH_SLOT(54) XDPH_SLOT(55)
XDPH_SLOT(56) XDPH_SLOT(57) XDPH_SLOT(58) XDPH_SLOT(59)
XDPH_SLOT(60) XDPH_SLOT(61) XDPH_SLOT(62) XDPH_SLOT(63)
#endif

SEC("xdp")
int xdph_dispatcher(struct xdp_md *ctx)
{
	int ret, out = XDP_PASS;

	XDPH_CALL(0)
#if XDPHOOKS_DISPATCHER_SLOTS > 1
	XDPH_CALL(1)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 2
	XDPH_CALL(2) XDPH_CALL(3)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 4
	XDPH_CALL(4) XDPH_CALL(5) XDPH_CALL(6) XDPH_CALL(7)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 8
	XDPH_CALL(8) XDPH_CALL(9) XDPH_CALL(10) XDPH_CALL(11)
	XDPH_CALL(12) XDPH_CALL(13) XDPH_CALL(14) XDPH_CALL(15)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 16
	XDPH_CALL(16) XDPH_CALL(17) XDPH_CALL(18) XDPH_CALL(19)
	XDPH_CALL(20) XDPH_CALL(21) XDPH_CALL(22) XDPH_CALL(23)
	XDPH_CALL(24) XDPH_CALL(25) XDPH_CALL(26) XDPH_CALL(27)
	XDPH_CALL(28) XDPH_CALL(29) XDPH_CALL(30) XDPH_CALL(31)
#endif
#if XDPHOOKS_DISPATCHER_SLOTS > 32
	XDPH_CALL(32) XDPH_CALL(33) XDPH_CALL(34) XDPH_CALL(35)
	XDPH_CALL(36) XDPH_CALL(37) XDPH_CALL(38) XDPH_CALL(39)
	XDPH_CALL(40) XDPH_CALL(41) XDPH_CALL(42) XDPH_CALL(43)
	XDPH_CALL(44) XDPH_CALL(45) XDPH_CALL(46) XDPH_CALL(47)
	XDPH_CALL(48) XDPH_CALL(49) XDPH_CALL(50) XDPH_CALL(51)
	XDPH_CALL(52) XDPH_CALL(53) XDPH_CALL(54) XDPH_CALL(55)
	XDPH_CALL(56) XDPH_CALL(57) XDPH_CALL(58) XDPH_CALL(59)
	XDPH_CALL(60) XDPH_CALL(61) XDPH_CALL(62) XDPH_CALL(63)
#endif
	return XDP_PASS;
}

/* Used only by xdphooks.probe: loaded as an extension of slot0 to find out
 * whether this kernel allows freplace. Never attached to an interface. */
SEC("xdp")
int xdph_probe_ext(struct xdp_md *ctx)
{
	return XDP_TX;
}

char _license[] SEC("license") = "GPL";
