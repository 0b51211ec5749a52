// Package dtx runs global transactions across shards: TCC and Saga with a
// durable log, recovery, and the participant barrier that makes every
// branch call idempotent, empty-cancel safe and hang-proof.
package dtx
