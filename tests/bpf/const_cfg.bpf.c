// Configured the modern libbpf way: const volatile globals set before load (the
// verifier prunes what they switch off). Drops UDP to drop_port, or everything
// when drop_all; counts what it sees and what it dropped.
#include <linux/bpf.h>
#include <stdbool.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

const volatile __u16 drop_port = 0;
const volatile bool drop_all = false;
const volatile char label[8] = "none";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} cfg_stats SEC(".maps");  /* 0: seen, 1: dropped */

static __always_inline int count(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&cfg_stats, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	return 0;
}

SEC("xdp")
int const_cfg(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);
	struct udphdr *udp;

	count(0);
	if (drop_all && label[0] == 'a') {  /* "all": both must be set */
		count(1);
		return XDP_DROP;
	}
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP || ip->ihl != 5)
		return XDP_PASS;
	udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return XDP_PASS;
	if (drop_port && udp->dest == bpf_htons(drop_port)) {
		count(1);
		return XDP_DROP;
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
