/* SPDX-License-Identifier: GPL-2.0 */
/* xdphooks: records of the on-demand tracing programs (slot_profile.bpf.c,
 * slot_trace.bpf.c). Keep in sync with xdphooks/fexit.py. */
#ifndef XDPH_ABI_TRACE_H
#define XDPH_ABI_TRACE_H

#include <linux/types.h>

/* value of `xdph_prof` (PERCPU_ARRAY, 1 entry) */
struct xdph_prof {
	__u64 runs; /* completed calls of the timed function */
	__u64 ns;   /* summed entry-to-exit time */
};

/* record in `xdph_trace_ring` (RINGBUF) */
struct xdph_trace_event {
	__u64 ts_ns;   /* bpf_ktime_get_ns() at the component's return */
	__u32 retval;  /* the component's XDP verdict */
	__u32 len;     /* data_end - data after the component ran */
	__u16 proto;   /* Ethernet type, network order */
	__u8 l4proto;  /* IPv4 protocol / IPv6 next header, 0 if neither */
	__u8 pad;
	__u32 cpu;
};

#endif
