// SPDX-License-Identifier: GPL-2.0-only
/* tinyfw: drop UDP packets to the destination ports listed in deny_ports, and count them.
 * A stand-in for a third-party project with its own headers and Makefile (xdphooks'
 * plugin guide, section 9): include/parsing_helpers.h is xdp-tutorial's. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "parsing_helpers.h"
#include "tinyfw.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, TINYFW_MAX_PORTS);
	__type(key, __u16); /* UDP destination port, host byte order */
	__type(value, struct tinyfw_hits);
} deny_ports SEC(".maps");

SEC("xdp")
int tinyfw(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct hdr_cursor nh = { .pos = (void *)(long)ctx->data };
	struct tinyfw_hits *hits;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *udp;
	__u16 port;

	if (parse_ethhdr(&nh, data_end, &eth) != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (parse_iphdr(&nh, data_end, &iph) != IPPROTO_UDP)
		return XDP_PASS;
	if (parse_udphdr(&nh, data_end, &udp) < 0)
		return XDP_PASS;
	port = bpf_ntohs(udp->dest);
	hits = bpf_map_lookup_elem(&deny_ports, &port);
	if (!hits)
		return XDP_PASS;
	__sync_fetch_and_add(&hits->packets, 1);
	__sync_fetch_and_add(&hits->bytes, (__u64)(data_end - (void *)(long)ctx->data));
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
