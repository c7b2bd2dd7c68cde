package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/clawcage/clawcage/internal/config"
)

func TestParseListen(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    listenSpec
		wantErr bool
	}{
		{"127.0.0.1:3128", listenSpec{"default", "127.0.0.1:3128"}, false},
		{"assistant=127.0.0.1:3128", listenSpec{"assistant", "127.0.0.1:3128"}, false},
		{"assistant=[::1]:3128", listenSpec{"assistant", "[::1]:3128"}, false},
		{"=127.0.0.1:3128", listenSpec{}, true},
		{"assistant=", listenSpec{}, true},
		{"assistant=3128", listenSpec{}, true},
	} {
		got, err := parseListen(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseListen(%q) = %+v, %v; want %+v, err %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestPresetParamsFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "preset-params.json")
	os.WriteFile(f, []byte(`{"npm.registry":"https://mirror.internal.example/npm/"}`), 0o600)
	got, err := presetParams(context.Background(), &config.Config{}, f)
	if err != nil || got["npm.registry"] != "https://mirror.internal.example/npm/" || len(got) != 1 {
		t.Fatalf("params %v, %v", got, err)
	}
	os.WriteFile(f, []byte(`["not", "an object"]`), 0o600)
	if _, err := presetParams(context.Background(), &config.Config{}, f); err == nil {
		t.Fatal("a JSON array was accepted as preset parameters")
	}
	if _, err := presetParams(context.Background(), &config.Config{}, filepath.Join(dir, "missing.json")); err == nil {
		t.Fatal("a missing file was accepted")
	}
}
