// SPDX-License-Identifier: GPL-2.0
/* Test object with two XDP programs in different sections and a tc program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} two_map SEC(".maps");

SEC("xdp")
int xdp_first(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp.frags")
int xdp_second(struct xdp_md *ctx)
{
	__u32 key = 0, *v = bpf_map_lookup_elem(&two_map, &key);
	if (v)
		*v += 1;
	return XDP_TX;
}

SEC("tc")
int tc_prog(struct __sk_buff *skb)
{
	return 0;
}

char _license[] SEC("license") = "Dual BSD/GPL";
