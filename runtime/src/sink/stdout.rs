//! stdout sink (stub, being written).

use crate::message::{ChangeBatch, Position};
use crate::sink::{Sink, SinkError};

pub struct StdoutSink;

impl Sink for StdoutSink {
    fn name(&self) -> &'static str {
        "stdout"
    }
    async fn applied_position(&mut self) -> Result<Option<Position>, SinkError> {
        Ok(None)
    }
    async fn apply(&mut self, _batch: &ChangeBatch) -> Result<(), SinkError> {
        Err(SinkError::Invalid("not implemented".into()))
    }
    async fn commit(&mut self, _through: Position) -> Result<(), SinkError> {
        Ok(())
    }
    async fn rollback(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
