// SPDX-License-Identifier: GPL-2.0-only
/* firewall: drop IPv4 packets whose source address is in a blocklist.
 *
 * The blocklist is an ordinary hash map. Whoever loads this object may pin
 * it (xdphooks does, under <bpffs>/xdphooks/maps/firewall/blocklist) so that
 * its contents survive a relink of the chain. Fill it with e.g.
 *   bpftool map update pinned PIN key 198 18 1 2 value 0 0 0 0 0 0 0 0
 * Keys are IPv4 addresses in network byte order; values count drops.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#ifndef PLUGIN_VERSION
#define PLUGIN_VERSION "0"
#endif
/* Build stamp (the package version); unused by the program itself. */
const char plugin_version[] __attribute__((used)) = PLUGIN_VERSION;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);   /* IPv4 source address, network byte order */
	__type(value, __u64); /* packets dropped from that source */
} blocklist SEC(".maps");

SEC("xdp")
int firewall(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__u64 *hits;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_PASS;

	hits = bpf_map_lookup_elem(&blocklist, &iph->saddr);
	if (!hits)
		return XDP_PASS;
	__sync_fetch_and_add(hits, 1);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
