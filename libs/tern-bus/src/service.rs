use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::{Bus, BusError};

/// A call to one subject as a [`tower::Service`]: `Req` in, `Resp` out.
pub struct RpcService<Req, Resp> {
    bus: Bus,
    subject: Arc<str>,
    _types: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> RpcService<Req, Resp> {
    pub(crate) fn new(bus: Bus, subject: String) -> Self {
        Self {
            bus,
            subject: subject.into(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for RpcService<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            bus: self.bus.clone(),
            subject: self.subject.clone(),
            _types: PhantomData,
        }
    }
}

impl<Req, Resp> tower::Service<Req> for RpcService<Req, Resp>
where
    Req: prost::Message + Send + 'static,
    Resp: prost::Message + Default + Send + 'static,
{
    type Response = Resp;
    type Error = BusError;
    type Future = Pin<Box<dyn Future<Output = Result<Resp, BusError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BusError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let bus = self.bus.clone();
        let subject = self.subject.clone();
        Box::pin(async move { bus.call(&subject, &req).await })
    }
}
