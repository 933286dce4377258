// SPDX-License-Identifier: GPL-2.0
/*
 * xdphooks rootlet for the static backend.
 *
 * Linked (libbpf BPF static linker) with rewritten component objects into one
 * XDP program. Slot N is the global function xdph_slot_N(struct xdp_md *):
 * the rootlet provides a __weak default for every slot up to its capacity and
 * each component's rewritten copy provides the strong definition, so the
 * linker resolves the call to the component. Slots >= nr_slots are never
 * reached: nr_slots, the policies and the counters/events switches live in
 * const volatile rodata that the verifier sees as constants, so dead branches
 * (and the default slot bodies) are pruned.
 *
 * Built once per capacity (XDPH_CAPACITY = 1, 2, 4 ... 128): the control
 * plane picks the smallest capacity >= the chain length.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdphooks_config.h"

#ifndef XDPH_CAPACITY
#define XDPH_CAPACITY XDPHOOKS_MAX_SLOTS
#endif

const volatile struct xdphooks_config xdph_config = {
	.magic = XDPHOOKS_MAGIC,
	.version = XDPHOOKS_VERSION,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPHOOKS_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct xdphooks_slot_stats);
} xdph_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XDPHOOKS_EVENTS_SIZE);
} xdph_events SEC(".maps");

#define XDPH_SLOTS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15) X(16) X(17) X(18) X(19) X(20) X(21) X(22) X(23) X(24) X(25) X(26) X(27) X(28) X(29) X(30) X(31) X(32) X(33) X(34) X(35) X(36) X(37) X(38) X(39) X(40) X(41) X(42) X(43) X(44) X(45) X(46) X(47) X(48) X(49) X(50) X(51) X(52) X(53) X(54) X(55) X(56) X(57) X(58) X(59) X(60) X(61) X(62) X(63) X(64) X(65) X(66) X(67) X(68) X(69) X(70) X(71) X(72) X(73) X(74) X(75) X(76) X(77) X(78) X(79) X(80) X(81) X(82) X(83) X(84) X(85) X(86) X(87) X(88) X(89) X(90) X(91) X(92) X(93) X(94) X(95) X(96) X(97) X(98) X(99) X(100) X(101) X(102) X(103) X(104) X(105) X(106) X(107) X(108) X(109) X(110) X(111) X(112) X(113) X(114) X(115) X(116) X(117) X(118) X(119) X(120) X(121) X(122) X(123) X(124) X(125) X(126) X(127)

/* weak default slots: overridden by the component linked into the slot */
#define X(n)                                                                   \
	__attribute__((weak, noinline)) int xdph_slot_##n(struct xdp_md *ctx) \
	{                                                                      \
		return ctx ? XDP_PASS : XDP_ABORTED;                           \
	}
XDPH_SLOTS(X)
#undef X

static __attribute__((noinline)) void xdph_log(__u32 slot, __u32 ret, __u32 ifindex)
{
	struct xdphooks_event *e;

	e = bpf_ringbuf_reserve(&xdph_events, sizeof(*e), 0);
	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->slot = slot;
	e->retval = ret;
	e->ifindex = ifindex;
	e->flags = 0;
	bpf_ringbuf_submit(e, 0);
}

/* Per-slot epilogue, inlined into the root for each slot. Returns 1 if the
 * chain ends with `ret`.
 *
 * Cost matters here: every slot is a real BPF-to-BPF call and on hosts with
 * return-thunk mitigations (SRSO "Safe RET", retbleed) every `ret` is an
 * expensive, deliberately mispredicted return, so nothing in this path may add
 * another call (the counter update used to be a noinline function: one more
 * call+ret per slot). The policy is one table load indexed by the verdict
 * (policy index order == XDP action values, anything else is "unknown")
 * instead of a switch that clang turned into a compare chain with a
 * re-materialised rodata address per arm; the common "continue" case is a
 * single compare. `slot` is a constant after inlining, so the counters key is
 * a constant and the verifier inlines the PERCPU_ARRAY lookup. */
static __always_inline int xdph_handle(const __u32 slot, __u32 ret, struct xdp_md *ctx,
				       const int counters)
{
	__u64 idx = ret;
	__u8 d;

	/* idx = min((u32)ret, XDPH_POL_UNKNOWN), written in asm so that clang
	 * cannot split the clamp from the value used below (it did, leaving the
	 * verifier an unbounded index) */
	asm volatile("if %[i] <= 5 goto +1; %[i] = 5"
		     : [i] "+r"(idx));
	if (counters) {
		struct xdphooks_slot_stats *st;
		__u32 key = slot;

		st = bpf_map_lookup_elem(&xdph_counters, &key);
		if (st) {
			st->packets++;
			st->verdicts[idx]++;
		}
	}
	d = xdph_config.policy[slot][idx];
	if (__builtin_expect(d == XDPH_CONTINUE, 1))
		return 0;
	if (d == XDPH_RETURN)
		return 1;
	if (d == XDPH_LOG && xdph_config.events_enabled)
		xdph_log(slot, ret, ctx->ingress_ifindex);
	return 0;
}

/* End of the chain before slot n: a block that differs per n (clang cannot
 * merge them), so for n < nr_slots the verifier sees the branch to it never
 * taken and removes both the branch and the block. */
#define XDPH_END(n)                                                            \
	({                                                                     \
		int __r;                                                       \
		asm volatile("%[r] = %[k]; %[r] = 2" : [r] "=r"(__r) : [k] "i"(n)); \
		__r;                                                           \
	})

SEC("xdp")
int xdphooks_root(struct xdp_md *ctx)
{
	/* nr_slots is read once: the verifier knows its value in the register,
	 * so every per-slot "n >= nr" test is decided at load time */
	__u32 nr = xdph_config.nr_slots;
	__u32 ret;

	/* Two copies of the chain, with and without counters: the verifier
	 * keeps only the configured one, so the other switch costs nothing at
	 * run time (no per-slot load of counters_enabled). */
#define X(n)                                                                   \
	if ((n) < XDPH_CAPACITY) {                                             \
		if ((n) >= nr)                                                 \
			return XDPH_END(n);                                    \
		ret = xdph_slot_##n(ctx);                                      \
		if (xdph_handle((n), ret, ctx, XDPH_CNT))                      \
			return ret;                                            \
	}
	if (xdph_config.counters_enabled) {
#define XDPH_CNT 1
		XDPH_SLOTS(X)
#undef XDPH_CNT
	} else {
#define XDPH_CNT 0
		XDPH_SLOTS(X)
#undef XDPH_CNT
	}
#undef X
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
