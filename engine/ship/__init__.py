"""Many sensors, one console over NATS JetStream: the sensor's shipper (`[ship]`), the server's
collector (`[collect]`), heartbeats, trail distribution through an object store and Maltrail's UDP
intake. Nothing here is imported, and no NATS is needed, without one of those sections."""
