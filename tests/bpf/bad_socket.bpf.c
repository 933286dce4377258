// Not an XDP object: a socket filter and a kprobe, no SEC("xdp") program.
// Used to check that a plugin pointing at the wrong program type is refused by name.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("socket")
int sock_filter(struct __sk_buff *skb)
{
	return 0;
}

SEC("kprobe/do_unlinkat")
int kp_unlink(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
