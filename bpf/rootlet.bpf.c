// SPDX-License-Identifier: GPL-2.0
/*
 * xdphooks rootlet for the static backend: what the generated root program
 * needs besides the components.
 *
 * Linked first (libbpf BPF static linker) with the rewritten component
 * objects, whose entries are the global functions xdph_slot_<N>. The body of
 * xdphooks_root below is a stub: xdphooks/link/splice.py replaces it with the
 * chain, generated for this chain's slots and policies (each slot spliced
 * inline or called). This object provides the root's section, BTF and
 * signature, the chain's counters, the event ring, the logging function and
 * the array that joins the segments of a long chain.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "xdphooks_config.h"

/* One entry: every slot's counters in one per-CPU value, looked up once in the
 * root's prologue (once per segment); each slot adds at verdicts[slot][verdict]. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdphooks_counters);
} xdph_counters SEC(".maps");

/* A chain too big for one program (maps, slots) is several linked programs:
 * segment k ends with a tail call to segment k + 1 through this array. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, XDPHOOKS_MAX_SEGMENTS);
	__type(key, __u32);
	__type(value, __u32);
} xdph_segments SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, XDPHOOKS_EVENTS_SIZE);
} xdph_events SEC(".maps");

/* The `log` decision, called out of line by the generated epilogue only on the
 * verdicts that log: xdph_log(ctx, slot, verdict). */
#include "xdphooks_log.h"

/* Replaced by the generated chain; referencing the maps and xdph_log keeps
 * them (and their BTF) in the object whatever clang decides. */
SEC("xdp")
int xdphooks_root(struct xdp_md *ctx)
{
	__u32 key = 0;

	if (ctx->ingress_ifindex == 0xffffffff)
		return xdph_log(ctx, 0, 0) + (bpf_map_lookup_elem(&xdph_counters, &key) != 0);
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
