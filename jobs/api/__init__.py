"""The jobs and processors REST API (`/api/v1/`): `views` (thin, calling `jobs.services`),
`serializers` (request and response shapes), `schema` (the OpenAPI text of each operation),
`links` (signed results links), `uploads` (two-step uploads), `embed` (`?include=results`) and
`urls` (the routes, ending with the contract's 404)."""
