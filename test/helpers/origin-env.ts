/** The origin's production settings (../shared/seed/), all of which every Tidemark process must accept. */
export const ORIGIN_ENV = Object.freeze({
  ENABLE_EVENT_SOURCING: "true",
  EVENT_STORE_BUCKET: "spice-event-store",
  ENABLE_PROCESSED_EVENT_REGISTRY: "true",
  PROCESSED_EVENT_LEASE_TIMEOUT_SECONDS: "900",
  PROCESSED_EVENT_HEARTBEAT_INTERVAL_SECONDS: "30",
  EVENT_STORE_SEQUENCE_ALLOCATOR_MODE: "postgres",
  EVENT_STORE_SEQUENCE_SCHEMA: "spice_event_registry",
  EVENT_STORE_SEQUENCE_HANDLER_PREFIX: "write_side",
});
