package main

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// nginxConf is a minimal HTTP/1.1 reverse proxy: one process (no master),
// keep-alive to the upstream, no access log, responses and request bodies
// relayed as they arrive (streams are not buffered, as in the router). It
// parses and forwards, nothing more: what a C proxy pays on this machine
// for the two extra hops.
const nginxConf = `daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  upstream fake { server %[2]s; keepalive 1024; }
  server {
    listen %[3]s;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`

// startNginx runs the nginx binary at bin as a reverse proxy to the host
// of the upstream URL on a free loopback port and waits until it listens.
func startNginx(bin, upstream string) (*routerProc, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, fmt.Errorf("nginx upstream: %w", err)
	}
	dir, err := os.MkdirTemp("", "clawcage-bench-nginx-")
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	conf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, nginxConf, dir, u.Host, addr), 0o600); err != nil {
		return nil, err
	}
	// -e: the error log before the config is read (nginx ≥ 1.19.5).
	cmd := exec.Command(bin, "-p", dir, "-c", conf, "-e", filepath.Join(dir, "error.log"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("nginx: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		var ws syscall.WaitStatus
		if pid, _ := syscall.Wait4(cmd.Process.Pid, &ws, syscall.WNOHANG, nil); pid > 0 {
			return nil, fmt.Errorf("nginx exited (%v) before listening; log in %s", ws, dir)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return &routerProc{cmd: cmd, url: "http://" + addr, pid: cmd.Process.Pid, state: dir}, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	return nil, fmt.Errorf("nginx did not listen on %s (log in %s)", addr, dir)
}
