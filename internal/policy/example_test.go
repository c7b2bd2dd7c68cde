package policy_test

import (
	"fmt"
	"net/netip"

	"github.com/clawcage/clawcage/internal/policy"
)

func ExampleMatcher_DecideName() {
	p, err := policy.Parse([]byte(`
network:
  - {name: github-read, hosts: [api.github.com], methods: [GET]}
  - {name: office-db, cidrs: [10.0.5.0/24], ports: [5432]}
  - {name: docs, hosts: ["*.docs.example"]}
`), "policy.yaml")
	if err != nil {
		panic(err)
	}
	m, err := p.Compile(policy.CompileOptions{})
	if err != nil {
		panic(err)
	}
	show := func(d policy.Decision) { fmt.Println(d.Allow, d.Rule, d.Reason) }
	show(m.DecideName("API.GitHub.com.", 443, "GET", "/repos/x/y"))
	show(m.DecideName("api.github.com", 443, "", "")) // CONNECT
	show(m.DecideName("a.b.docs.example", 443, "", ""))
	show(m.DecideName("docs.example", 443, "", ""))
	show(m.DecideName("10.0.5.7", 5432, "", ""))
	show(m.DecideName("127.1", 5432, "", ""))
	// A name allowed by "docs" that resolves to the metadata address:
	show(m.DecideAddr(netip.MustParseAddr("169.254.169.254"), 443, "docs"))
	// Output:
	// true github-read allowed
	// false github-read tunnel-not-allowed
	// true docs allowed
	// false  no-rule-for-host
	// true office-db allowed
	// false  invalid-host
	// false docs special-address
}
