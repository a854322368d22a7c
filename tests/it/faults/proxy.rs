//! An in-test TCP proxy between lsnpipe and one server, with link faults on command.
//!
//! ```text
//!  lsnpipe ──TCP──▶ Proxy (127.0.0.1:port) ──TCP──▶ server
//!                    │ per connection: two pumps (up, down) that read a chunk, then look at
//!                    │ the fault: pass, delay, throttle, or swallow (blackhole)
//!                    └ reset(): every open connection is closed with a TCP RST
//! ```
//!
//! A blackhole keeps every socket open and forwards nothing, as a dead NAT entry or a hung
//! server does. A connection that carried data while the link was black stays dead after the
//! link heals (its bytes are gone, as they would be); new connections work again. Its close
//! reaches the server only without [`Proxy::keep_ghosts`]: over a really dead link the server
//! keeps such a session (a ghost) until its own keepalives or timeouts end it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the link does to the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Accept and keep connections, forward nothing.
    Blackhole,
    /// Hold each chunk this long before forwarding it.
    Delay(Duration),
    /// Forward at most this many bytes per second in each direction.
    Throttle(u64),
    /// From the server, forward this many more bytes on each connection, then hold the rest
    /// (unread, so nothing is lost) until the fault changes: a stream that stops mid-message.
    CapDownstream(u64),
}

#[derive(Debug, Clone, Copy)]
struct Control {
    fault: Fault,
    /// A connection open while the link is black is dead: its client's close is not passed on
    /// to the server.
    keep_ghosts: bool,
    /// Bumped by `reset`; a connection opened before the bump closes with an RST.
    resets: u64,
}

#[derive(Debug)]
pub struct Proxy {
    port: u16,
    control: watch::Sender<Control>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listen on a free local port and forward to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (control, watch) = watch::channel(Control {
            fault: Fault::None,
            keep_ghosts: false,
            resets: 0,
        });
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream, watch.clone()));
            }
        });
        Proxy {
            port,
            control,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on, a connection silenced by a blackhole stays open towards the server after
    /// its client closes it (see the module's documentation).
    pub fn keep_ghosts(&self) {
        self.control.send_modify(|c| c.keep_ghosts = true);
    }

    pub fn set(&self, fault: Fault) {
        self.control.send_modify(|c| c.fault = fault);
    }

    /// Back to a working link (connections poisoned by a blackhole stay dead).
    pub fn heal(&self) {
        self.set(Fault::None);
    }

    /// Close every open connection with an RST, as a restarted firewall or router does.
    pub fn reset(&self) {
        self.control.send_modify(|c| c.resets += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Open connections end too: their watch sender is gone.
        self.accept.abort();
    }
}

async fn serve(client: TcpStream, upstream: SocketAddr, mut control: watch::Receiver<Control>) {
    let born = control.borrow().resets;
    let Ok(server) = TcpStream::connect(upstream).await else {
        abort(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let poisoned = Arc::new(AtomicBool::new(false));
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let reset = {
        let up = pump(
            &mut client_read,
            &mut server_write,
            control.clone(),
            &poisoned,
            false,
        );
        let down = pump(
            &mut server_read,
            &mut client_write,
            control.clone(),
            &poisoned,
            true,
        );
        tokio::select! {
            _ = up => false,
            _ = down => false,
            changed = control.wait_for(|c| c.resets != born) => changed.is_ok(),
        }
    };
    let client = client_read.reunite(client_write);
    let server = server_read.reunite(server_write);
    if let (Ok(client), Ok(server)) = (client, server) {
        if reset {
            abort(client);
            abort(server);
        }
    }
}

/// Close with an RST rather than a FIN.
fn abort(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
}

async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut control: watch::Receiver<Control>,
    poisoned: &AtomicBool,
    downstream: bool,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    // Bytes forwarded under the current CapDownstream.
    let mut capped: Option<(u64, u64)> = None;
    loop {
        if downstream {
            if let Fault::CapDownstream(cap) = control.borrow().fault {
                if capped.is_none_or(|(c, _)| c != cap) {
                    capped = Some((cap, 0));
                }
            } else {
                capped = None;
            }
            if let Some((cap, sent)) = capped {
                if sent >= cap {
                    // Hold: read nothing more until the fault changes.
                    let changed = control
                        .wait_for(|c| c.fault != Fault::CapDownstream(cap))
                        .await;
                    if changed.is_err() {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => n?,
            // With ghosts kept, a blackhole kills every connection it finds open, idle or not,
            // as a dead link does (otherwise whether an idle one's close gets through would
            // race the end of the blackhole).
            _ = control.wait_for(|c| c.keep_ghosts && c.fault == Fault::Blackhole),
                if !poisoned.load(Ordering::Relaxed) => {
                poisoned.store(true, Ordering::Relaxed);
                continue;
            }
        };
        if n == 0 {
            let c = *control.borrow();
            let dead = poisoned.load(Ordering::Relaxed) || c.fault == Fault::Blackhole;
            if !downstream && dead && c.keep_ghosts {
                // Until a reset, or the proxy goes.
                let _ = control.wait_for(|_| false).await;
                return Ok(());
            }
            return to.shutdown().await;
        }
        let fault = control.borrow().fault;
        if fault == Fault::Blackhole {
            poisoned.store(true, Ordering::Relaxed);
        }
        if poisoned.load(Ordering::Relaxed) {
            continue;
        }
        if let Fault::Delay(d) = fault {
            tokio::time::sleep(d).await;
        }
        if let Some((cap, sent)) = &mut capped {
            let now = n.min(usize::try_from(*cap - *sent).unwrap_or(usize::MAX));
            to.write_all(&buf[..now]).await?;
            *sent += now as u64;
            if now < n {
                let cap = *cap;
                if control
                    .wait_for(|c| c.fault != Fault::CapDownstream(cap))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                to.write_all(&buf[now..n]).await?;
            }
            continue;
        }
        to.write_all(&buf[..n]).await?;
        if let Fault::Throttle(bytes_per_second) = fault {
            let secs = n as f64 / bytes_per_second.max(1) as f64;
            tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        }
    }
}
