# Builds the freplace dispatcher objects shipped in xdphooks/data/.
#   make -f bpf/dispatcher.mk            (from the repo root)
# Included by other makefiles as well: only defines dispatcher-* targets.
DISPATCHER_SLOTS ?= 4 8 16 32 64
DISPATCHER_SRC := bpf/dispatcher.bpf.c
DISPATCHER_OUT := $(foreach n,$(DISPATCHER_SLOTS),xdphooks/data/dispatcher-$(n).o)
BPF_CLANG ?= clang
DISPATCHER_CFLAGS ?= -O2 -g -target bpf -I/usr/include/x86_64-linux-gnu -Ibpf -Wall -Werror

.PHONY: dispatcher dispatcher-clean
dispatcher: $(DISPATCHER_OUT)

xdphooks/data/dispatcher-%.o: $(DISPATCHER_SRC) $(wildcard bpf/xdphooks_config.h)
	@mkdir -p $(dir $@)
	$(BPF_CLANG) $(DISPATCHER_CFLAGS) -DXDPHOOKS_DISPATCHER_SLOTS=$* -c $< -o $@

dispatcher-clean:
	rm -f $(DISPATCHER_OUT)
