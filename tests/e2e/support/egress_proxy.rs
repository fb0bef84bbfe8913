//! A minimal HTTP egress proxy: `CONNECT` tunnels (or a refusal), and plain-HTTP requests in
//! absolute form answered by the proxy itself. It records the head of every request it gets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Open tunnels; answer absolute-form requests with `{"via": "proxy"}`.
    Forward,
    /// Answer every `CONNECT` with 403.
    RefuseConnect,
}

/// One request head as the proxy received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `CONNECT localhost:1234 HTTP/1.1`, `GET http://host/path HTTP/1.1`.
    pub request_line: String,
    pub proxy_authorization: Option<String>,
    /// Every `Host` header of the head.
    pub hosts: Vec<String>,
}

pub struct EgressProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl EgressProxy {
    pub async fn start(mode: Mode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = seen.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, mode, recorder.clone()));
            }
        });
        EgressProxy { addr, seen }
    }

    /// `http://{userinfo@}127.0.0.1:port`.
    pub fn url(&self, userinfo: Option<&str>) -> String {
        match userinfo {
            Some(userinfo) => format!("http://{userinfo}@{}", self.addr),
            None => format!("http://{}", self.addr),
        }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve(mut client: TcpStream, mode: Mode, recorder: Arc<Mutex<Vec<Seen>>>) {
    let Some(head) = read_head(&mut client).await else { return };
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_owned();
    let fields: Vec<(&str, &str)> = lines.filter_map(|line| line.split_once(':')).collect();
    let values = |wanted: &str| -> Vec<String> {
        fields
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.trim().to_owned())
            .collect()
    };
    let proxy_authorization = values("proxy-authorization").into_iter().next();
    let hosts = values("host");
    recorder.lock().unwrap().push(Seen { request_line: request_line.clone(), proxy_authorization, hosts });

    if let Some(target) = request_line.strip_prefix("CONNECT ").and_then(|rest| rest.split(' ').next()) {
        if mode == Mode::RefuseConnect {
            let _ = client.write_all(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n").await;
            return;
        }
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
            return;
        };
        if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    } else {
        let body = r#"{"via":"proxy"}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = client.write_all(response.as_bytes()).await;
    }
}

/// Reads up to the end of the request head (the tests send no request bodies through it).
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await.ok()? == 0 || head.len() > 64 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}
