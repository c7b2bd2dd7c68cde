package usage

import "os"

func mkdir(dir string) error                   { return os.MkdirAll(dir, 0o700) }
func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o600) }
