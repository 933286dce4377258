/* State kept in plain globals, as ordinary libbpf programs do: .bss and .data
 * (libbpf's internal maps), no map of its own. Counts every packet in `seen`,
 * and the UDP packets to port 53 in `dns_seen` (the pre-flight packets are UDP to
 * 53 from documentation addresses; the tests send none), and leaves `marker`
 * alone. Version 2 (global_seen_v2.bpf.c) makes `seen` 32 bits wide. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef SEEN_T
#define SEEN_T __u64
#endif

SEEN_T seen = 0;
__u64 dns_seen = 0;
__u64 marker = 0x5eed;  /* .data */

SEC("xdp")
int global_seen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp = (void *)(ip + 1);

	if (marker != 0x5eed)
		return XDP_ABORTED;
	__sync_fetch_and_add(&seen, 1);
	if ((void *)(udp + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP) &&
	    ip->ihl == 5 && ip->protocol == IPPROTO_UDP && udp->dest == bpf_htons(53))
		__sync_fetch_and_add(&dns_seen, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
