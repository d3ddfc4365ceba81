package proxy

import "github.com/batonproxy/baton/config"

// upstreamBalanceFactor returns hash_balance_factor for u (0: off).
func upstreamBalanceFactor(u *config.Upstream) int { return 0 }
