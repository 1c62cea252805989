package relay

// drainingReason is the reason phrase of the 508 that refuses an Allocate while relay
// drains (SIGTERM, before exit). A full server sends the same code, which clients read
// as "try another server"; the phrase tells a person, or relay check, that this one is
// shutting down or restarting rather than out of capacity.
const drainingReason = "Server Draining"
