package admin

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/clawcage/clawcage/internal/vault"
)

// vaultCollector exports the vault's state (never key material): how many
// keys each provider has and whether key memory is locked.
type vaultCollector struct {
	v      *vault.Vault
	keys   *prometheus.Desc
	locked *prometheus.Desc
}

func newVaultCollector(v *vault.Vault) *vaultCollector {
	return &vaultCollector{
		v:      v,
		keys:   prometheus.NewDesc("clawcage_vault_keys", "Provider keys stored in the router's vault.", []string{"provider"}, nil),
		locked: prometheus.NewDesc("clawcage_vault_memory_locked", "1 if all key memory is mlocked, 0 if some may be swapped.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *vaultCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.keys
	ch <- c.locked
}

// Collect implements prometheus.Collector.
func (c *vaultCollector) Collect(ch chan<- prometheus.Metric) {
	counts := map[string]int{}
	for _, k := range c.v.List() {
		counts[k.Provider]++
	}
	for p, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.keys, prometheus.GaugeValue, float64(n), p)
	}
	locked := 0.0
	if c.v.MemoryLocked() {
		locked = 1
	}
	ch <- prometheus.MustNewConstMetric(c.locked, prometheus.GaugeValue, locked)
}

// gatherer combines the router's metrics with the vault's.
func gatherer(d Deps) prometheus.Gatherer {
	var gs prometheus.Gatherers
	if d.Metrics != nil {
		gs = append(gs, d.Metrics)
	}
	if d.Vault != nil {
		reg := prometheus.NewRegistry()
		reg.MustRegister(newVaultCollector(d.Vault))
		gs = append(gs, reg)
	}
	if len(gs) == 0 {
		return nil
	}
	return gs
}
