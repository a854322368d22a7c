//! The CopyBoth stream after `START_REPLICATION`: XLogData out to the consumer, standby status
//! updates back to the server, never waiting on one another.
//!
//! ```text
//!            ┌──────────── reader task ─────────────┐   bounded mpsc    ┌──────────────────┐
//!  socket ──▶│ 'w' ─▶ Positions::observe_xlogdata ──┼──── Event ───────▶│ ReplicationStream │
//!   read     │ 'k' ─▶ Positions::observe_keepalive  │   (send().await   │   ::recv()        │
//!   half     │        └ reply requested ─┐          │   = backpressure) └───┬──────────────┘
//!            └───────────────────────────┼──────────┘                       │ nudge() / stop()
//!                                        ▼  WriterCommand                   ▼
//!            ┌──────────── writer task ───────────────────────────────────────┐
//!  socket ◀──│ 'r' from Positions::status_update: on request, on nudge, on a  │
//!   write    │ timer; on stop: a final 'r', then CopyDone                    │
//!   half     └────────────────────────────────────────────────────────────────┘
//! ```
//!
//! A consumer that stalls fills the channel; the reader then stops reading the socket and the
//! server's sends back up through TCP. The reader cannot see keepalives while it waits, so the
//! writer's timer alone keeps `wal_sender_timeout` from firing: the interval must be below half
//! of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::conn::{Backend, BoxStream, FrameReader, Session, server_error, server_notice};
use super::error::WireError;
use super::frames::{ReplicationMessage, XLogData};
use super::quote::quote_ident;
use super::replication_commands::{LogicalOptions, ReplicationConnection};
use crate::Lsn;
use crate::pgoutput::DecodeError;
use crate::positions::Positions;

/// XLogData messages buffered between the socket and the consumer.
const EVENT_CAPACITY: usize = 256;
/// Pending writer commands; more status requests than this are one request anyway.
const COMMAND_CAPACITY: usize = 4;
/// How long `stop` waits for the server to finish the stream.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Silence on the socket after which the server is presumed gone (libpq's receiver uses 60 s);
/// at least this many status intervals, since every quiet interval asks the server for a reply.
const RECEIVE_TIMEOUT_MIN: Duration = Duration::from_secs(60);
const RECEIVE_TIMEOUT_INTERVALS: u32 = 6;

enum Event {
    Data(XLogData),
    /// The server ended streaming and the connection is idle again.
    End,
    Failed(WireError),
}

#[derive(Debug)]
enum WriterCommand {
    /// Send a status update now (reply requested, or a nudge).
    StatusNow,
    /// Send a final status update and CopyDone, then hand the socket back.
    Finish,
    /// Hand the socket back without writing (the server already ended streaming).
    Quit,
}

type Reader = FrameReader<ReadHalf<BoxStream>>;

/// A running logical replication stream.
#[derive(Debug)]
pub struct ReplicationStream {
    events: mpsc::Receiver<Event>,
    commands: mpsc::Sender<WriterCommand>,
    reader: Option<JoinHandle<Reader>>,
    writer: Option<JoinHandle<Result<WriteHalf<BoxStream>, WireError>>>,
    state: StreamState,
    server_version_num: u32,
    parameters: HashMap<String, String>,
    target: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Streaming,
    Ended,
    Failed,
}

impl std::fmt::Debug for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Data(x) => write!(f, "Data({})", x.start),
            Event::End => f.write_str("End"),
            Event::Failed(e) => write!(f, "Failed({e})"),
        }
    }
}

impl ReplicationConnection {
    /// `START_REPLICATION SLOT slot LOGICAL start (options)` and start streaming. Status updates
    /// go out every `status_interval` (use at most half of `wal_sender_timeout`), at once when
    /// the server asks, and on [`ReplicationStream::nudge`].
    ///
    /// Silence: with a receive timeout set ([`ReplicationConnection::set_receive_timeout`]) the
    /// stream fails after that long without a byte from the server, and status updates go out
    /// at least every third of it, asking for a reply when the server has been quiet, so an
    /// idle but healthy server is never mistaken for a dead one. Without one, the limit is
    /// `RECEIVE_TIMEOUT_INTERVALS` status intervals, and at least a minute.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        opts: &LogicalOptions,
        positions: Arc<Positions>,
        status_interval: Duration,
    ) -> Result<ReplicationStream, WireError> {
        let sql = format!(
            "START_REPLICATION SLOT {} LOGICAL {start} {}",
            quote_ident(slot),
            opts.to_sql()
        );
        let mut out = BytesMut::new();
        frontend::query(&sql, &mut out)
            .map_err(|e| WireError::Protocol(format!("cannot send START_REPLICATION: {e}")))?;
        self.session.send(&out, "starting replication").await?;
        wait_for_copy_both(&mut self.session).await?;

        let server_version_num = self.server_version_num();
        let parameters = std::mem::take(&mut self.session.parameters);
        let chosen_limit = self.session.frames.idle_limit();
        let (io, buf) = self.session.frames.into_parts();
        let (read_half, write_half) = tokio::io::split(io);
        let mut frames = FrameReader::from_parts(read_half, buf);
        let (receive_limit, status_interval) = match chosen_limit {
            Some(limit) if !limit.is_zero() => (limit, status_interval.min(limit / 3)),
            _ => (
                RECEIVE_TIMEOUT_MIN.max(status_interval.saturating_mul(RECEIVE_TIMEOUT_INTERVALS)),
                status_interval,
            ),
        };
        frames.set_idle_limit(Some(receive_limit));
        let heard = Arc::new(AtomicBool::new(true));
        let (event_tx, events) = mpsc::channel(EVENT_CAPACITY);
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let reader = tokio::spawn(read_loop(
            frames,
            event_tx.clone(),
            commands.clone(),
            positions.clone(),
            heard.clone(),
        ));
        let writer = tokio::spawn(write_loop(
            write_half,
            command_rx,
            event_tx,
            Updates {
                positions,
                heard,
                interval: status_interval,
            },
        ));
        Ok(ReplicationStream {
            events,
            commands,
            reader: Some(reader),
            writer: Some(writer),
            state: StreamState::Streaming,
            server_version_num,
            parameters,
            target: self.target,
        })
    }
}

async fn wait_for_copy_both(session: &mut Session) -> Result<(), WireError> {
    let mut failed = None;
    loop {
        match session.frames.next("starting replication").await? {
            Backend::CopyBoth => return Ok(()),
            Backend::Message(Message::ErrorResponse(body)) => {
                failed = Some(server_error(&body));
            }
            Backend::Message(Message::ReadyForQuery(_)) => {
                return Err(failed.map_or_else(
                    || WireError::Protocol("START_REPLICATION ended without streaming".into()),
                    |e| WireError::Server(Box::new(e)),
                ));
            }
            Backend::Message(Message::NoticeResponse(body)) => {
                let notice = server_notice(&body);
                tracing::info!(%notice, "server notice while starting replication");
            }
            Backend::Message(Message::ParameterStatus(_)) => {}
            other => {
                return Err(WireError::Protocol(format!(
                    "unexpected {other:?} in answer to START_REPLICATION"
                )));
            }
        }
    }
}

impl ReplicationStream {
    /// The next XLogData; `Ok(None)` once the server has ended the stream cleanly.
    pub async fn recv(&mut self) -> Result<Option<XLogData>, WireError> {
        match self.state {
            StreamState::Streaming => {}
            StreamState::Ended => return Ok(None),
            StreamState::Failed => {
                return Err(WireError::Closed {
                    doing: "streaming (the stream has already failed)",
                });
            }
        }
        match self.events.recv().await {
            Some(Event::Data(x)) => Ok(Some(x)),
            Some(Event::End) => {
                self.state = StreamState::Ended;
                Ok(None)
            }
            Some(Event::Failed(e)) => {
                self.state = StreamState::Failed;
                Err(e)
            }
            None => {
                self.state = StreamState::Failed;
                Err(WireError::Closed { doing: "streaming" })
            }
        }
    }

    /// Send a status update soon (after a commit is durable, so the slot advances promptly).
    pub fn nudge(&self) {
        // A full queue already holds a pending update.
        let _ = self.commands.try_send(WriterCommand::StatusNow);
    }

    pub fn server_version_num(&self) -> u32 {
        self.server_version_num
    }

    /// Nothing received is waiting to be consumed: the consumer has caught up with the socket.
    pub fn is_caught_up(&self) -> bool {
        self.events.is_empty()
    }

    /// End streaming: a final status update, CopyDone, then discard what the server had
    /// already sent until it confirms. Returns the connection, idle again: fine for SQL and
    /// slot commands, but not for a second `START_REPLICATION` (a PostgreSQL 15 walsender ends
    /// that one at once, because it does not reset its end-of-copy flags); reconnect for that.
    pub async fn stop(mut self) -> Result<ReplicationConnection, WireError> {
        match self.state {
            StreamState::Streaming => self.finish_streaming().await?,
            // The server already ended it; the writer still waits for commands.
            StreamState::Ended => drop(self.commands.send(WriterCommand::Quit).await),
            StreamState::Failed => {
                return Err(WireError::Closed {
                    doing: "stopping (the stream had already failed)",
                });
            }
        }
        self.reclaim_connection().await
    }

    /// Send the final update and CopyDone; discard data until the server confirms the end.
    async fn finish_streaming(&mut self) -> Result<(), WireError> {
        let _ = self.commands.send(WriterCommand::Finish).await;
        tokio::time::timeout(STOP_TIMEOUT, async {
            loop {
                match self.events.recv().await {
                    Some(Event::Data(_)) => {}
                    Some(Event::End) => return Ok(()),
                    Some(Event::Failed(e)) => return Err(e),
                    None => return Err(WireError::Closed { doing: "stopping" }),
                }
            }
        })
        .await
        .unwrap_or_else(|_| {
            Err(WireError::Protocol(
                "the server did not end the stream after CopyDone".into(),
            ))
        })
    }

    /// Join both tasks and put the socket halves back together.
    async fn reclaim_connection(&mut self) -> Result<ReplicationConnection, WireError> {
        let lost = |e: tokio::task::JoinError| {
            WireError::Protocol(format!("replication stream task failed: {e}"))
        };
        let writer = self.writer.take();
        let reader = self.reader.take();
        let (Some(writer), Some(reader)) = (writer, reader) else {
            return Err(WireError::Protocol("stream already stopped".into()));
        };
        let write_half = writer.await.map_err(lost)??;
        let frames = reader.await.map_err(lost)?;
        let (read_half, buf) = frames.into_parts();
        let io = read_half.unsplit(write_half);
        Ok(ReplicationConnection {
            session: Session {
                frames: FrameReader::from_parts(io, buf),
                parameters: std::mem::take(&mut self.parameters),
                server_version_num: self.server_version_num,
            },
            target: std::mem::take(&mut self.target),
        })
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        // Dropping the stream closes the connection: nothing may keep the socket open.
        if let Some(reader) = self.reader.take() {
            reader.abort();
        }
        if let Some(writer) = self.writer.take() {
            writer.abort();
        }
    }
}

async fn read_loop(
    mut frames: Reader,
    events: mpsc::Sender<Event>,
    commands: mpsc::Sender<WriterCommand>,
    positions: Arc<Positions>,
    heard: Arc<AtomicBool>,
) -> Reader {
    let last = match read_frames(&mut frames, &events, &commands, &positions, &heard).await {
        Ok(()) => Event::End,
        Err(e) => Event::Failed(e),
    };
    let _ = events.send(last).await;
    frames
}

async fn read_frames(
    frames: &mut Reader,
    events: &mpsc::Sender<Event>,
    commands: &mpsc::Sender<WriterCommand>,
    positions: &Positions,
    heard: &AtomicBool,
) -> Result<(), WireError> {
    let mut copy_over = false;
    loop {
        let doing = if copy_over {
            "finishing the stream"
        } else {
            "streaming"
        };
        let Backend::Message(msg) = frames.next(doing).await.map_err(|e| match e {
            // After CommandComplete without ReadyForQuery the server went away on purpose
            // (shutdown); still a lost connection for whoever consumes the stream.
            WireError::Closed { .. } if copy_over => WireError::Closed {
                doing: "streaming (the server ended the stream and closed the connection; is it \
                        shutting down?)",
            },
            other => other,
        })?
        else {
            return Err(WireError::Protocol(
                "a second CopyBothResponse while streaming".into(),
            ));
        };
        heard.store(true, Ordering::Relaxed);
        match msg {
            Message::CopyData(body) => match ReplicationMessage::parse(body.into_bytes()) {
                Ok(ReplicationMessage::XLogData(x)) => {
                    positions.observe_xlogdata(
                        x.start,
                        x.end,
                        x.data.first().copied().unwrap_or(0),
                    );
                    positions.observe_stream(x.end, &x.data);
                    if events.send(Event::Data(x)).await.is_err() {
                        // The consumer is gone; nobody will read what follows.
                        return Ok(());
                    }
                }
                Ok(ReplicationMessage::Keepalive(k)) => {
                    positions.observe_keepalive(k.wal_end);
                    if k.reply_requested {
                        let _ = commands.try_send(WriterCommand::StatusNow);
                    }
                }
                // Newer servers add message kinds a client has to ask for; skip strangers.
                Err(DecodeError::UnknownTag { tag, .. }) => {
                    tracing::debug!(tag, "skipping an unknown replication message");
                }
                Err(e) => return Err(WireError::Decode(e)),
            },
            Message::CopyDone => {
                // The server finished its side: finish ours (a no-op if we already did).
                let _ = commands.send(WriterCommand::Finish).await;
            }
            Message::CommandComplete(_) => copy_over = true,
            Message::ReadyForQuery(_) => return Ok(()),
            Message::ErrorResponse(body) => {
                return Err(WireError::Server(Box::new(server_error(&body))));
            }
            Message::NoticeResponse(body) => {
                let notice = server_notice(&body);
                tracing::warn!(%notice, "server notice while streaming");
            }
            Message::ParameterStatus(_) => {}
            other => {
                return Err(WireError::Protocol(format!(
                    "unexpected {} while streaming",
                    super::conn::describe(&other)
                )));
            }
        }
    }
}

/// What the writer needs to build status updates.
struct Updates {
    positions: Arc<Positions>,
    /// Set by the reader on every frame; the writer clears it on each tick.
    heard: Arc<AtomicBool>,
    interval: Duration,
}

async fn write_loop(
    mut io: WriteHalf<BoxStream>,
    mut commands: mpsc::Receiver<WriterCommand>,
    events: mpsc::Sender<Event>,
    updates: Updates,
) -> Result<WriteHalf<BoxStream>, WireError> {
    match write_updates(&mut io, &mut commands, &updates).await {
        Ok(()) => Ok(io),
        Err(e) => {
            // Tell the consumer: with no status updates the server will end the stream anyway.
            let _ = events.send(Event::Failed(e)).await;
            Err(WireError::Closed {
                doing: "sending status updates",
            })
        }
    }
}

async fn write_updates(
    io: &mut WriteHalf<BoxStream>,
    commands: &mut mpsc::Receiver<WriterCommand>,
    updates: &Updates,
) -> Result<(), WireError> {
    let mut ticker = tokio::time::interval(updates.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = BytesMut::new();
    loop {
        // Commands first: a reply the server asked for must not wait for the timer.
        let (finish, ask_reply) = tokio::select! {
            biased;
            cmd = commands.recv() => match cmd {
                Some(WriterCommand::StatusNow) => (false, false),
                Some(WriterCommand::Finish) => (true, false),
                Some(WriterCommand::Quit) | None => return Ok(()),
            },
            // A quiet interval asks the server to answer, so silence means a dead connection
            // (the reader's idle limit) rather than an idle one.
            _ = ticker.tick() => (false, !updates.heard.swap(false, Ordering::Relaxed)),
        };
        out.clear();
        encode_status(&updates.positions, ask_reply, &mut out)?;
        if finish {
            frontend::copy_done(&mut out);
        }
        io.write_all(&out)
            .await
            .map_err(WireError::io("sending a status update"))?;
        io.flush()
            .await
            .map_err(WireError::io("sending a status update"))?;
        ticker.reset();
        if finish {
            return Ok(());
        }
    }
}

fn encode_status(
    positions: &Positions,
    reply_requested: bool,
    out: &mut BytesMut,
) -> Result<(), WireError> {
    let mut payload = BytesMut::new();
    positions
        .status_update(reply_requested)
        .encode(&mut payload);
    frontend::CopyData::new(payload.freeze())
        .map_err(|e| WireError::Protocol(format!("cannot frame a status update: {e}")))?
        .write(out);
    Ok(())
}
