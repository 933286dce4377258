// SPDX-License-Identifier: GPL-2.0-only
/* counter: count packets per L4 protocol; always XDP_PASS.
 *
 * Index = IPv4 protocol / IPv6 next header (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6,
 * ...); 255 counts frames that are neither IPv4 nor IPv6 (or are truncated).
 * Per-CPU values: sum them when reading (bpftool map dump shows each CPU).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "0"
#endif
/* Build stamp (the package version); unused by the program itself. */
const char plugin_version[] __attribute__((used)) = PLUGIN_VERSION;

#define OTHER 255

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
} proto_count SEC(".maps");

static __always_inline __u32 l4_proto(void *data, void *data_end)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return OTHER;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *iph = (void *)(eth + 1);

		if ((void *)(iph + 1) > data_end)
			return OTHER;
		return iph->protocol;
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return OTHER;
		return ip6->nexthdr;
	}
	return OTHER;
}

SEC("xdp")
int counter(struct xdp_md *ctx)
{
	__u32 key = l4_proto((void *)(long)ctx->data, (void *)(long)ctx->data_end);
	__u64 *count = bpf_map_lookup_elem(&proto_count, &key);

	if (count)
		*count += 1; /* per-CPU slot: no atomics needed */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
