//! The upstream server (`serve`): one thread per connection, a fixed 200.

use crate::BenchError;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitCode, Stdio};

use crate::measure::NICE;

pub(crate) const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

pub(crate) fn serve(n: usize) -> ExitCode {
    let mut listeners = Vec::new();
    for _ in 0..n.max(1) {
        match TcpListener::bind("127.0.0.1:0") {
            Ok(l) => listeners.push(l),
            Err(e) => {
                eprintln!("serve: bind: {e}");
                return ExitCode::from(1);
            }
        }
    }
    {
        let mut out = std::io::stdout().lock();
        for l in &listeners {
            if let Ok(a) = l.local_addr() {
                let _ = writeln!(out, "ADDR {a}");
            }
        }
        let _ = writeln!(out, "READY");
        let _ = out.flush();
    }
    for l in listeners {
        std::thread::spawn(move || {
            for stream in l.incoming().flatten() {
                std::thread::spawn(move || serve_connection(stream));
            }
        });
    }
    // Runs until the parent closes our stdin.
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    ExitCode::SUCCESS
}

pub(crate) fn serve_connection(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    let mut out = Vec::with_capacity(RESPONSE.len() * 4);
    // How much of "\r\n\r\n" the bytes so far end with (requests have no body).
    let mut state = 0u8;
    loop {
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        out.clear();
        for &b in buf.iter().take(n) {
            state = match (state, b) {
                (0 | 2, b'\r') => state + 1,
                (1, b'\n') => 2,
                (3, b'\n') => {
                    out.extend_from_slice(RESPONSE);
                    0
                }
                (_, b'\r') => 1,
                _ => 0,
            };
        }
        if !out.is_empty() && s.write_all(&out).is_err() {
            return;
        }
    }
}

pub(crate) struct UpstreamProcess {
    pub(crate) child: Child,
    pub(crate) addrs: Vec<SocketAddr>,
}

impl UpstreamProcess {
    pub(crate) fn start(n: usize, cpus: Option<&str>) -> Result<UpstreamProcess, BenchError> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut cmd = Command::new("nice");
        cmd.args(["-n", NICE]);
        match cpus {
            Some(c) => cmd.args(["taskset", "-c", c]).arg(exe),
            None => cmd.arg(exe),
        };
        let mut child = cmd
            .args(["serve", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("upstream: {e}"))?;
        let stdout = child.stdout.take().ok_or("upstream: no stdout")?;
        let mut addrs = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| e.to_string())?;
            if line == "READY" {
                break;
            }
            if let Some(a) = line.strip_prefix("ADDR ").and_then(|a| a.parse().ok()) {
                addrs.push(a);
            }
        }
        if addrs.len() != n {
            let _ = child.kill();
            return Err("upstream did not start".into());
        }
        Ok(UpstreamProcess { child, addrs })
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
