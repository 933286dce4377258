// SPDX-License-Identifier: GPL-2.0-only
/* txbuggy: a deliberately buggy "firewall" that bounces UDP to port 9
 * (discard) with XDP_TX and passes everything else. Packaged with policy
 * tx=log, so a chain records the bogus verdict and carries on instead of
 * transmitting.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "0"
#endif
/* Build stamp (the package version); unused by the program itself. */
const char plugin_version[] __attribute__((used)) = PLUGIN_VERSION;

SEC("xdp")
int txbuggy(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct udphdr *udp;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->protocol != IPPROTO_UDP || iph->ihl < 5)
		return XDP_PASS;
	udp = (void *)iph + iph->ihl * 4;
	if ((void *)(udp + 1) > data_end)
		return XDP_PASS;
	if (udp->dest == bpf_htons(9))
		return XDP_TX; /* the bug: should have been XDP_DROP */
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
