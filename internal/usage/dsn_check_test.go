package usage

import (
	"os"
	"path/filepath"
	"testing"
)

func TestDSNPathWithSpaceAndPercent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a b%20c")
	os.Mkdir(dir, 0o700)
	l, err := Open(filepath.Join(dir, "usage.db"))
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if _, err := os.Stat(filepath.Join(dir, "usage.db")); err != nil {
		t.Fatalf("database not at the literal path: %v", err)
	}
}
