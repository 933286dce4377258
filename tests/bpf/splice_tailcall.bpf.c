// SPDX-License-Identifier: GPL-2.0
/* Test component whose entry tail-calls: spliced, the tail call would leave
 * the whole chain, so the static backend must call it instead. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} jmp SEC(".maps");

SEC("xdp")
int splice_tailcall(struct xdp_md *ctx)
{
	bpf_tail_call(ctx, &jmp, 0); /* empty slot: falls through */
	return XDP_PASS;
}

char _license[] SEC("license") = "GPL";
