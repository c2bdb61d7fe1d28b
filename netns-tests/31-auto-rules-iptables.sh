#!/usr/bin/env bash
# 31-auto-rules-iptables: 30-auto-rules with nft absent from PATH: the
# iptables/ip6tables fallback does the same job.
FTC_NO_NFT=1 exec bash "$(dirname "$0")/30-auto-rules.sh" "$@"
