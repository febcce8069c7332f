//! A TCP relay between a gateway and its Redis that can stop passing bytes at a chosen command,
//! so a test decides the order in which two processes' store calls reach Redis — the races a
//! loaded machine produces now and then, made to happen every time. It never reorders or drops
//! bytes: what it holds it passes on, in order, once released.
//!
//! The trigger is a piece of text from the command (the Redis store sends each Lua script's
//! source with `EVAL`, so a line of one script names that operation).

use std::{net::SocketAddr, sync::Arc};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf},
    sync::watch,
};
use tokio_util::sync::CancellationToken;

/// A line only the `reserve` script has (the held → reserved takeover).
pub const RESERVE_SCRIPT: &str = "if t == 'H' then\n  redis.call('SET', KEYS[1], 'R:'";

/// What the relay does when a request contains the armed trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Pass everything.
    Off,
    /// Hold that request, and every request after it, until released: the command has not run.
    Request,
    /// Pass that request, then hold every byte after it, both ways: the command runs, its
    /// answer (and anything sent later) waits — a call that took effect but whose caller timed
    /// out.
    Answer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Watching for the trigger (or not, when `Off`).
    Armed(Hold),
    /// The trigger was seen: holding in the directions `Hold` says.
    Holding(Hold),
}

pub struct HoldProxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    trigger: Arc<str>,
    stop: CancellationToken,
}

impl HoldProxy {
    /// Relays 127.0.0.1:`upstream`; `trigger` is the text that starts a hold.
    pub async fn start(upstream: u16, trigger: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, _) = watch::channel(State::Armed(Hold::Off));
        let me = Self {
            addr,
            state,
            trigger: trigger.into(),
            stop: CancellationToken::new(),
        };
        let (tx, trigger, stop) = (me.state.clone(), me.trigger.clone(), me.stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((client, _)) = accepted else { continue };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let requests = relay(cr, sw, tx.clone(), Some(trigger.clone()));
                let answers = relay(sr, cw, tx.clone(), None);
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = async { tokio::join!(requests, answers) } => {}
                    }
                });
            }
        });
        me
    }

    /// The Redis URL that goes through the relay.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Holds at the next request that contains the trigger, as `hold` says.
    pub fn arm(&self, hold: Hold) {
        self.state.send_replace(State::Armed(hold));
    }

    /// Whether a hold has started.
    pub fn holding(&self) -> bool {
        matches!(*self.state.borrow(), State::Holding(_))
    }

    /// Passes on everything held, in order, and stops holding.
    pub fn release(&self) {
        self.state.send_replace(State::Armed(Hold::Off));
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies `from` to `to`, waiting while the state holds this direction. `trigger`: this is the
/// request direction, which watches for it.
async fn relay(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    state: watch::Sender<State>,
    trigger: Option<Arc<str>>,
) {
    let mut rx = state.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        let mut pass_this = false;
        if let Some(t) = &trigger {
            let seen = chunk.windows(t.len()).any(|w| w == t.as_bytes());
            let current = *state.borrow();
            if seen && let State::Armed(h @ (Hold::Request | Hold::Answer)) = current {
                state.send_replace(State::Holding(h));
                pass_this = h == Hold::Answer;
            }
        }
        if !pass_this {
            let requests = trigger.is_some();
            // Held: requests for either hold, answers only for `Answer`.
            let held = |s: &State| match *s {
                State::Holding(Hold::Request) => requests,
                State::Holding(Hold::Answer) => true,
                _ => false,
            };
            if rx.wait_for(|s| !held(s)).await.is_err() {
                break;
            }
        }
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
