"""Signing, encryption and replay protection of Smart API messages: `keys` (own key,
trusted peers), `graphsig` (secure profile), `legacy` + `multipart` (Smart API 1.1
scheme), `replay`, and `profile` (the inbound/outbound policies the endpoint uses)."""
