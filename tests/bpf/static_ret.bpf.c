// SPDX-License-Identifier: GPL-2.0
/* Test component: returns (value at key 0 of its own map) - 1, or XDP_PASS
 * when that value is 0 and counts the packets it saw (key 1). Every copy has the same
 * function and map names, so linking two copies exercises the rewriter's
 * namespacing. Also has a global and a static subprogram in .text, a
 * const volatile and a .bss variable. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} ret_map SEC(".maps");

const volatile __u32 ret_bias = 0;
__u32 seen;

static __attribute__((noinline)) __u32 bump(__u32 key)
{
	__u32 *v = bpf_map_lookup_elem(&ret_map, &key);
	if (!v)
		return 0;
	__sync_fetch_and_add(v, 1);
	return *v;
}

__attribute__((noinline)) int ret_value(struct xdp_md *ctx)
{
	__u32 key = 0, *v = bpf_map_lookup_elem(&ret_map, &key);
	if (!ctx)
		return 0;
	return (v && *v) ? (int)(*v - 1) : XDP_PASS;
}

SEC("xdp")
int xdp_ret(struct xdp_md *ctx)
{
	seen += bump(1);
	return ret_value(ctx) + ret_bias;
}

char _license[] SEC("license") = "GPL";
