//! Pipelined execution on the target connection: send now, check the result later, in order.
//!
//! ```text
//! execute(stmt, params) ─▶ first poll sends Bind/Execute/Sync ─▶ queue ▶ … ▶ oldest result checked
//!                                                                 (at most `window` outstanding)
//! ```
//!
//! tokio-postgres writes requests to the socket in the order they are first polled and routes
//! responses back in that order, so a request that is polled once and parked keeps its place.
//! The target runs the statements back to back inside the open transaction while we decode and
//! send the next ones; a round trip is paid once per window, not once per row. The queue is
//! bounded, so a slow target slows us down instead of growing memory. The first failure is the
//! one reported: later statements only fail because the transaction is already aborted.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use tokio_postgres::{Client, Statement};

use super::error::{ApplyError, Operation};
use super::value::Param;

type Response = Pin<Box<dyn Future<Output = Result<u64, tokio_postgres::Error>> + Send>>;

/// What a queued request was, for its error and for the rows-found check.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub table: Arc<str>,
    pub operation: Operation,
    /// Rows an update or delete must find (fewer: the target had diverged); 0 for others.
    pub expected_rows: u64,
}

struct Pending {
    response: Response,
    context: Context,
}

pub(crate) struct InFlight {
    client: Arc<Client>,
    queue: VecDeque<Pending>,
    window: usize,
    /// A `BEGIN` asked for and not sent yet (see [`InFlight::begin_deferred`]).
    begin_deferred: bool,
    /// Updates and deletes that found no row (the target had diverged; logged, not fatal).
    pub rows_not_found: u64,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("queued", &self.queue.len())
            .field("window", &self.window)
            .finish()
    }
}

impl InFlight {
    pub fn new(client: Arc<Client>, window: usize) -> Self {
        InFlight {
            client,
            queue: VecDeque::with_capacity(window),
            window: window.max(1),
            begin_deferred: false,
            rows_not_found: 0,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Open a transaction with the next request sent (or the next [`InFlight::drain`]), not
    /// now: when the stream has caught up, a small source transaction then reaches the target
    /// in one write — BEGIN, its statements and COMMIT — and wakes the target's backend once
    /// instead of twice (a wake-up costs most under load).
    pub fn begin_deferred(&mut self) {
        self.begin_deferred = true;
    }

    /// Send `statement` with `params` now; its result is checked when it reaches the front.
    pub async fn execute(
        &mut self,
        statement: Statement,
        params: Vec<Param>,
        context: Context,
    ) -> Result<(), ApplyError> {
        let client = Arc::clone(&self.client);
        let response: Response =
            Box::pin(async move { client.execute_raw(&statement, params).await });
        self.push(response, context).await
    }

    /// Send a parameterless simple query (`BEGIN`, `COMMIT`) in the same order.
    pub async fn simple(&mut self, sql: String) -> Result<(), ApplyError> {
        self.simple_on(sql, Arc::from("(transaction)"), Operation::Bookkeeping)
            .await
    }

    /// Send a parameterless statement about `table` (`TRUNCATE`) in the same order.
    pub async fn simple_on(
        &mut self,
        sql: String,
        table: Arc<str>,
        operation: Operation,
    ) -> Result<(), ApplyError> {
        let (response, context) = self.simple_request(sql, table, operation);
        self.push(response, context).await
    }

    fn simple_request(
        &self,
        sql: String,
        table: Arc<str>,
        operation: Operation,
    ) -> (Response, Context) {
        let client = Arc::clone(&self.client);
        let response: Response =
            Box::pin(async move { client.batch_execute(&sql).await.map(|()| 0) });
        let context = Context {
            table,
            operation,
            expected_rows: 0,
        };
        (response, context)
    }

    /// The deferred `BEGIN`, if any, ahead of whatever is sent next.
    async fn send_deferred_begin(&mut self) -> Result<(), ApplyError> {
        if !std::mem::take(&mut self.begin_deferred) {
            return Ok(());
        }
        let (response, context) = self.simple_request(
            "BEGIN".into(),
            Arc::from("(transaction)"),
            Operation::Bookkeeping,
        );
        self.enqueue(response, context).await
    }

    async fn push(&mut self, response: Response, context: Context) -> Result<(), ApplyError> {
        // `response` is not polled yet, so nothing of it has been sent: the BEGIN goes first.
        self.send_deferred_begin().await?;
        self.enqueue(response, context).await
    }

    async fn enqueue(
        &mut self,
        mut response: Response,
        context: Context,
    ) -> Result<(), ApplyError> {
        // The first poll writes the request to the connection; it cannot have an answer yet
        // unless the connection is already gone.
        if let Poll::Ready(result) = futures::poll!(response.as_mut()) {
            self.check(result, &context)?;
        } else {
            self.queue.push_back(Pending { response, context });
        }
        while self.queue.len() > self.window {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    /// Send `statement` (no parameters, one row) behind everything queued, wait for all of it,
    /// then return the row: its answer comes back with theirs, in the same round trip.
    pub async fn query_one_behind(
        &mut self,
        statement: Statement,
    ) -> Result<tokio_postgres::Row, ApplyError> {
        let client = Arc::clone(&self.client);
        let mut query = Box::pin(async move { client.query_one(&statement, &[]).await });
        // The first poll sends it; a ready answer this early means the connection is gone.
        let sent = futures::poll!(query.as_mut());
        self.drain().await?;
        let result = match sent {
            Poll::Ready(result) => result,
            Poll::Pending => query.await,
        };
        result.map_err(|e| ApplyError::from_target(e, "(session)", Operation::Bookkeeping))
    }

    /// Wait for every queued request; the first failure wins. A deferred `BEGIN` is sent first,
    /// so whatever the caller then runs directly on the client is inside the transaction.
    pub async fn drain(&mut self) -> Result<(), ApplyError> {
        self.send_deferred_begin().await?;
        while !self.queue.is_empty() {
            self.wait_oldest().await?;
        }
        Ok(())
    }

    /// After a failure: settle what is still queued, preferring an earlier failure to `err`
    /// (a later statement usually fails only because an earlier one aborted the transaction).
    pub async fn first_error(&mut self, err: ApplyError) -> ApplyError {
        self.begin_deferred = false;
        match self.drain().await {
            Err(earlier) => {
                self.queue.clear();
                earlier
            }
            Ok(()) => err,
        }
    }

    /// Forget queued requests (their connection is being abandoned or rolled back).
    pub fn clear(&mut self) {
        self.begin_deferred = false;
        self.queue.clear();
    }

    async fn wait_oldest(&mut self) -> Result<(), ApplyError> {
        let Some(pending) = self.queue.pop_front() else {
            return Ok(());
        };
        let result = pending.response.await;
        if let Err(err) = self.check(result, &pending.context) {
            self.queue.clear();
            return Err(err);
        }
        Ok(())
    }

    fn check(
        &mut self,
        result: Result<u64, tokio_postgres::Error>,
        context: &Context,
    ) -> Result<(), ApplyError> {
        match result {
            Ok(found) if found < context.expected_rows => {
                self.rows_not_found += context.expected_rows - found;
                tracing::warn!(
                    table = %context.table,
                    operation = %context.operation,
                    "row to change not found on the target; the target had diverged from the source"
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => Err(ApplyError::from_target(
                e,
                &context.table,
                context.operation,
            )),
        }
    }
}
