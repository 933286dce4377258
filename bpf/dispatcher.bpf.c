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
#if XDPHOOKS_DISPATCHER_SLOTS != 1 && XDPHOOKS_DISPATCHER_SLOTS != 2 &&         \
	XDPHOOKS_DISPATCHER_SLOTS != 4 && XDPHOOKS_DISPATCHER_SLOTS != 8 &&     \
	XDPHOOKS_DISPATCHER_SLOTS != 16 && XDPHOOKS_DISPATCHER_SLOTS != 32 &&   \
	XDPHOOKS_DISPATCHER_SLOTS != 64
#error "XDPHOOKS_DISPATCHER_SLOTS must be a power of two, 1..64"
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

/* one entry: all slots' counters (xdphooks_config.h) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdphooks_counters);
} xdph_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XDPHOOKS_EVENTS_SIZE);
} xdph_events SEC(".maps");

#include "xdphooks_log.h" /* xdph_log(): the `log` decision's record */

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
				      int *out, struct xdphooks_counters *c)
{
	__u64 idx = (__u32)ret;
	__u8 decision;

	/* clamp in one 64-bit register, so the verifier sees the bound where
	 * the value is used (clang otherwise compares a copy) */
	asm volatile("" : "+r"(idx));
	if (idx > XDPH_NR_POLICY - 1)
		idx = XDPH_NR_POLICY - 1;
	asm volatile("" : "+r"(idx));

	/* the counters were looked up once, in the prologue: here only the add
	 * (slot is a constant, so the row's offset is folded into the store). c is
	 * NULL exactly when counters are off; the verifier knows which and drops
	 * the test. */
	if (c)
		c->verdicts[slot][idx]++;
	{
		__u64 off = (__u64)slot * XDPH_NR_POLICY + idx;

		asm volatile("" : "+r"(off));
		if (off >= XDPHOOKS_MAX_SLOTS * XDPH_NR_POLICY)
			return 0;
		decision = ((const volatile __u8 *)xdph_config.policy)[off];
	}
	if (decision == XDPH_LOG) {
		/* out of line, as in the static chain: the record and the packet's
		 * first bytes (xdphooks_log.h) */
		if (xdph_config.events_enabled)
			xdph_log(ctx, slot, (__u32)ret);
		return 0;
	}
	if (decision == XDPH_RETURN) {
		*out = ret;
		return 1;
	}
	return 0;
}

/* The slot list, written once: the stubs and the calls are both generated from
 * it (libxdp's dispatcher does the same with one loop). */
#define XDPH_SLOTS_1(X) X(0)
#define XDPH_SLOTS_2(X) XDPH_SLOTS_1(X) X(1)
#define XDPH_SLOTS_4(X) XDPH_SLOTS_2(X) X(2) X(3)
#define XDPH_SLOTS_8(X) XDPH_SLOTS_4(X) X(4) X(5) X(6) X(7)
#define XDPH_SLOTS_16(X)                                                     \
	XDPH_SLOTS_8(X) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define XDPH_SLOTS_32(X)                                                     \
	XDPH_SLOTS_16(X) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23)     \
	X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31)
#define XDPH_SLOTS_64(X)                                                     \
	XDPH_SLOTS_32(X) X(32) X(33) X(34) X(35) X(36) X(37) X(38) X(39)     \
	X(40) X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) X(49) X(50)    \
	X(51) X(52) X(53) X(54) X(55) X(56) X(57) X(58) X(59) X(60) X(61)    \
	X(62) X(63)
#define XDPH_SLOTS__(n, X) XDPH_SLOTS_##n(X)
#define XDPH_SLOTS_(n, X) XDPH_SLOTS__(n, X)
#define XDPH_FOR_EACH_SLOT(X) XDPH_SLOTS_(XDPHOOKS_DISPATCHER_SLOTS, X)

#define XDPH_CALL(n)                                                         \
	if (xdph_config.nr_slots <= n)                                       \
		return XDP_PASS;                                             \
	ret = slot##n(ctx);                                                  \
	if (xdph_after(ctx, n, ret, &out, c))                                \
		return out;

XDPH_FOR_EACH_SLOT(XDPH_SLOT)

SEC("xdp")
int xdph_dispatcher(struct xdp_md *ctx)
{
	struct xdphooks_counters *c = 0;
	__u32 key = XDPH_COUNTERS_KEY;
	int ret, out = XDP_PASS;

	/* One lookup per packet; the pointer lives in a callee-saved register
	 * across the slots' calls. An array's key 0 is always there: a NULL here
	 * cannot happen, and the chain fails closed rather than run uncounted. */
	if (xdph_config.counters_enabled) {
		c = bpf_map_lookup_elem(&xdph_counters, &key);
		if (!c)
			return XDP_ABORTED;
	}
	XDPH_FOR_EACH_SLOT(XDPH_CALL)
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
