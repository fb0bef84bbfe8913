//! nginx configured to do the data plane's job, as the reference gateway.
//!
//! The configuration mirrors Aurora's request path as closely as nginx allows: the gateway
//! token is checked with a `map` on `Authorization` (401 when unknown), the client's
//! `Authorization` is removed and the provider credential injected as `X-Api-Key`,
//! `anthropic-version` gets a default only when the client sent none, responses stream
//! unbuffered (`proxy_buffering off`, and `proxy_request_buffering off` since Aurora streams
//! request bodies too), and upstream connections are kept alive over HTTP/1.1. Access logging
//! is off, as Aurora writes no per-request log at its default level. nginx runs as the current
//! user with every path inside a temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::procs::{Proc, free_port};

#[derive(Debug)]
pub(crate) struct Nginx {
    pub(crate) proc: Proc,
    pub(crate) addr: SocketAddr,
}

/// Killing only the master would orphan the workers: stop the whole process tree.
impl Drop for Nginx {
    fn drop(&mut self) {
        let Some(pid) = self.proc.pid() else { return };
        // The master first: killed after a worker, it would have time to start a replacement,
        // which would then outlive it.
        let mut pids = vec![pid.to_string()];
        pids.extend(self.workers());
        let _ = std::process::Command::new("kill").arg("-KILL").args(&pids).status();
    }
}

/// Writes the configuration into `dir` and starts nginx in the foreground.
pub(crate) async fn start(dir: &Path, upstream: SocketAddr, token: &str, credential: &str) -> anyhow::Result<Nginx> {
    let binary = which("nginx").context("nginx is not installed (scripts/bench installs it: apt-get install nginx)")?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let config = config(dir, addr, upstream, token, credential);
    let config_path = dir.join("nginx.conf");
    std::fs::write(&config_path, config)?;
    let prefix = format!("{}/", dir.display());
    let config_arg = config_path.display().to_string();
    let error_log = dir.join("logs/error.log").display().to_string();
    let proc =
        Proc::spawn("nginx", &binary, &["-p", &prefix, "-e", &error_log, "-c", &config_arg, "-g", "daemon off;"], &[])?;
    let nginx = Nginx { proc, addr };
    // nginx logs nothing when it is ready: wait until its port accepts connections and every
    // worker (`worker_processes auto`: one per core) has been forked. The master listens before
    // it forks, so the port alone once let the idle memory be read with a worker missing.
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    for _ in 0..500 {
        if nginx.workers().len() >= workers && tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(nginx);
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let log = std::fs::read_to_string(dir.join("logs/error.log")).unwrap_or_default();
    bail!("nginx did not start {workers} workers:\n{}\n{log}", nginx.proc.tail(20))
}

impl Nginx {
    /// The process ids of the master's children: its workers.
    fn workers(&self) -> Vec<String> {
        let Some(pid) = self.proc.pid() else { return Vec::new() };
        let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().map(str::to_owned).collect()
    }
}

pub(crate) fn version() -> String {
    std::process::Command::new("nginx")
        .arg("-v")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().replace("nginx version: ", ""))
        .unwrap_or_else(|_| "unknown".into())
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr, token: &str, credential: &str) -> String {
    let dir = dir.display();
    format!(
        r#"# Written by aurora-bench: nginx doing the Aurora data plane's job.
worker_processes auto;
user root root;
pid {dir}/nginx.pid;
worker_rlimit_nofile 16384;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;
    map_hash_bucket_size 128;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    # The gateway token check: only this token is allowed.
    map $http_authorization $aurora_ok {{
        default 0;
        "Bearer {token}" 1;
    }}
    # anthropic-version is a default the client may override.
    map $http_anthropic_version $aurora_anthropic_version {{
        "" "2023-06-01";
        default $http_anthropic_version;
    }}
    # A request id on the request upstream and on every answer: the client's when it sent one,
    # else a new one (Aurora's rule).
    map $http_x_request_id $aurora_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}

    upstream provider {{
        server {upstream};
        keepalive 128;
    }}

    server {{
        listen {listen} backlog=4096;
        location /p/anthropic/v1/ {{
            add_header X-Request-ID $aurora_request_id always;
            if ($aurora_ok = 0) {{
                add_header X-Aurora-Error gateway always;
                add_header X-Request-ID $aurora_request_id always;
                return 401 '{{"type":"error","error":{{"type":"authentication_error","message":"invalid gateway token"}}}}';
            }}
            proxy_pass http://provider/v1/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "";
            proxy_set_header X-Api-Key "{credential}";
            proxy_set_header anthropic-version $aurora_anthropic_version;
            proxy_set_header X-Request-ID $aurora_request_id;
            # What else Aurora removes: client credentials and cookies on the way up, cookies
            # and look-alike gateway errors on the way back.
            proxy_set_header Cookie "";
            proxy_set_header Api-Key "";
            proxy_set_header X-Goog-Api-Key "";
            proxy_set_header Forwarded "";
            proxy_hide_header Set-Cookie;
            proxy_hide_header X-Aurora-Error;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}
}}
"#
    )
}
