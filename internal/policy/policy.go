// Package policy defines the sandbox policy: which network destinations a
// sandbox may reach and with which filesystem and resource limits it is
// created. It parses, validates and decides; it performs no I/O beyond
// reading the bytes it is given (internal/egress enforces network decisions,
// internal/sandbox enforces the rest).
package policy

// Version is the only policy schema version this build understands.
const Version = 1

// DefaultPort is the port a rule allows when it lists none.
const DefaultPort = 443

// Policy is one sandbox's policy, as written in a standalone --policy file
// or under sandboxes.NAME.policy in clawcage.yaml.
type Policy struct {
	// Version of the schema; 0 in a file means Version.
	Version int `yaml:"version,omitempty" json:"version,omitempty"`
	// Presets names embedded presets whose rules are added to Network.
	Presets []string `yaml:"presets,omitempty" json:"presets,omitempty"`
	// Network lists the allow rules; anything not allowed is denied.
	Network []Rule `yaml:"network,omitempty" json:"network,omitempty"`
	// Filesystem lists extra host paths made visible inside the sandbox.
	Filesystem Filesystem `yaml:"filesystem,omitempty" json:"filesystem,omitempty"`
	// Resources sets the sandbox's cgroup and disk limits.
	Resources Resources `yaml:"resources,omitempty" json:"resources,omitempty"`
	// LocalPorts are TCP ports the agent may bind (and connect to) inside
	// its sandbox, for its own servers; 1-65535, no duplicates.
	LocalPorts []int `yaml:"local_ports,omitempty" json:"local_ports,omitempty"`
	// ProviderTools names the provider-side tools (see ProviderToolNames)
	// the privacy router lets this sandbox's requests use; empty means none.
	ProviderTools []string `yaml:"provider_tools,omitempty" json:"provider_tools,omitempty"`
}

// providerToolNames are the provider-side tools a policy may allow: tools
// that make the model provider reach the network on the agent's behalf.
var providerToolNames = []string{
	"web_search", "web_fetch", "code_execution", "mcp",
	"code_interpreter", "file_search", "image_generation", "computer_use",
}

// ProviderToolNames returns the provider-side tool names a policy may list
// under provider_tools.
func ProviderToolNames() []string {
	return append([]string(nil), providerToolNames...)
}

// AllowsProviderTool reports whether the policy lets the privacy router pass
// requests that use the provider-side tool name (one of ProviderToolNames).
func (p *Policy) AllowsProviderTool(name string) bool {
	if p == nil {
		return false
	}
	for _, t := range p.ProviderTools {
		if t == name {
			return true
		}
	}
	return false
}

// Rule allows connections to the named hosts and/or address ranges on the
// listed ports.
type Rule struct {
	// Name identifies the rule in decisions, logs and approvals.
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Hosts are exact names or "*.example.com" wildcards (one or more labels).
	Hosts []string `yaml:"hosts,omitempty" json:"hosts,omitempty"`
	// CIDRs are IPv4 or IPv6 ranges; a special-purpose address (private,
	// loopback, ...) is reachable only through a range named here.
	CIDRs []string `yaml:"cidrs,omitempty" json:"cidrs,omitempty"`
	// Ports allowed; empty means DefaultPort.
	Ports []int `yaml:"ports,omitempty" json:"ports,omitempty"`
	// Methods allowed for plain HTTP requests; empty means any.
	Methods []string `yaml:"methods,omitempty" json:"methods,omitempty"`
	// Paths are globs matched against plain-HTTP request paths; empty means any.
	Paths []string `yaml:"paths,omitempty" json:"paths,omitempty"`
}

// Filesystem lists host paths bound into the sandbox in addition to the
// minimal root and the workspace.
type Filesystem struct {
	// ReadOnly paths are bound read-only at the same path inside.
	ReadOnly []string `yaml:"read_only,omitempty" json:"read_only,omitempty"`
	// ReadWrite paths are bound read-write at the same path inside.
	ReadWrite []string `yaml:"read_write,omitempty" json:"read_write,omitempty"`
}

// Resources are the sandbox's limits; a zero value means the built-in default.
type Resources struct {
	// Memory limit in bytes (YAML accepts "512MiB", "1GiB", "1G" or a number).
	Memory ByteSize `yaml:"memory,omitempty" json:"memory,omitempty"`
	// Pids is the maximum number of tasks.
	Pids int `yaml:"pids,omitempty" json:"pids,omitempty"`
	// CPU is the number of CPUs' worth of time (1.5 = one and a half cores).
	CPU float64 `yaml:"cpu,omitempty" json:"cpu,omitempty"`
	// Disk limits the workspace size in bytes.
	Disk ByteSize `yaml:"disk,omitempty" json:"disk,omitempty"`
	// Tmp limits the size of the sandbox's /tmp tmpfs in bytes.
	Tmp ByteSize `yaml:"tmp,omitempty" json:"tmp,omitempty"`
}
