//! `session-out`: where a serve graph's results leave it (`vidflow serve`). Each item goes back
//! to its own session through the server's session hub, in the order it arrives (the order of
//! that session's input), and a session's end, which follows its last item through the graph,
//! tells the server that every result was delivered.

use std::sync::Arc;
use vidflow_engine::session::SessionHub;
use vidflow_engine::{
    BuildCtx, Emitter, Input, NodeError, NodeKind, PortType, Process, Runtime, SessionId,
    SessionUse,
};

pub fn kind() -> NodeKind {
    NodeKind::new(
        "session-out",
        "Hands each item back to its own session (`vidflow serve`), in order.",
        build,
    )
    .input("frames", PortType::FRAMES, "results, each of its session")
    .sessions(SessionUse::Exit)
    .example("- id: out\n  kind: session-out\n  inputs: { frames: sr.frames }\n")
}

fn build(cx: &BuildCtx<'_>) -> Result<Runtime, NodeError> {
    let hub = SessionHub::of(cx.shared, cx.node_id, "session-out")?;
    Ok(Runtime::Process(Box::new(SessionOut { hub })))
}

struct SessionOut {
    hub: Arc<SessionHub>,
}

impl Process for SessionOut {
    fn process(&mut self, input: Input, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        let sessions = input.sessions.clone();
        for (item, session) in input.items.into_iter().zip(sessions) {
            self.hub.deliver(session, item);
        }
        Ok(())
    }
    fn end_session(&mut self, session: SessionId, _out: &mut Emitter<'_>) -> Result<(), NodeError> {
        self.hub.ended(session);
        Ok(())
    }
}
