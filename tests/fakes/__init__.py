"""Small HTTP fakes of services no real server can be had for here, written from their public API docs."""
