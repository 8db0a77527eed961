"""HTTP routes of a worker, one module per area. Thin: parse, read (routed to
the owner of the key), format. Routes that return or erase personal data
require ``DMP_API_TOKEN`` when it is set."""
