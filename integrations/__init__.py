"""lipstream in other frameworks: Pipecat (`lipstream.integrations.pipecat`, extra `pipecat`) and LiveKit
Agents (`lipstream.integrations.livekit`, extra `livekit`). Client side only: they talk to a lipstream
server over gRPC with `lipstream.client.AsyncClient`; no model runs in the agent's process."""
