package dtx

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// logWriter group-commits the coordinator's log writes: statements from
// many global transactions queue up and a few flushers each write what is
// queued in one database transaction, so one fsync serves them all. Every
// caller waits for the commit that carries its statement.
//
// A flush is one round trip: the statements go as one pipeline ending in
// a single Sync, which PostgreSQL runs as one implicit transaction (an
// error in any statement rolls back all of them).
//
// Writes that recovery could redo (a transaction's final state, written
// after every branch acknowledged) go through a second queue whose
// commits do not wait for the disk: if one is lost in a crash, recovery
// finds the transaction still confirming or cancelling and repeats its
// phase 2, which every branch answers as a repeat.
type logWriter struct {
	db   *pgxpool.Pool
	ops  chan *logOp
	lazy chan *logOp
	stop chan struct{}
	wg   sync.WaitGroup
}

type logOp struct {
	sql  string
	args []any
	rows int64
	err  error
	done chan struct{}
}

const maxLogBatch = 512

func newLogWriter(db *pgxpool.Pool, flushers int) *logWriter {
	w := &logWriter{db: db, ops: make(chan *logOp, 4*maxLogBatch), lazy: make(chan *logOp, 4*maxLogBatch), stop: make(chan struct{})}
	for range flushers {
		w.wg.Go(func() { w.flushLoop(w.ops, false) })
	}
	for range max(flushers/2, 1) {
		w.wg.Go(func() { w.flushLoop(w.lazy, true) })
	}
	return w
}

var errLogClosed = errors.New("dtx: coordinator log closed")

// exec queues one statement and waits until it is committed and on disk.
func (w *logWriter) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	return w.queue(ctx, w.ops, sql, args)
}

// execLazy queues one statement that recovery could redo and waits until
// it is committed (visible to every reader), not until it is on disk.
func (w *logWriter) execLazy(ctx context.Context, sql string, args ...any) (int64, error) {
	return w.queue(ctx, w.lazy, sql, args)
}

func (w *logWriter) queue(ctx context.Context, q chan *logOp, sql string, args []any) (int64, error) {
	op := &logOp{sql: sql, args: args, done: make(chan struct{})}
	select {
	case q <- op:
	case <-w.stop:
		return 0, errLogClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	// Once queued the write will be committed or fail; wait for that even
	// if ctx ends, so the caller never acts on a state it does not know.
	<-op.done
	return op.rows, op.err
}

func (w *logWriter) close() {
	close(w.stop)
	w.wg.Wait()
}

func (w *logWriter) flushLoop(q chan *logOp, lazy bool) {
	batch := make([]*logOp, 0, maxLogBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-q:
			batch = append(batch, op)
		case <-w.stop:
			// Drain what is queued so that no caller waits forever.
			for {
				select {
				case op := <-q:
					w.flush([]*logOp{op}, lazy)
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxLogBatch {
			select {
			case op := <-q:
				batch = append(batch, op)
			default:
				break more
			}
		}
		w.flush(batch, lazy)
	}
}

// flushTimeout bounds one group commit of the log: a database that hangs
// fails the writes (their callers treat them as unknown) instead of
// stalling the writer for good.
const flushTimeout = 15 * time.Second

func (w *logWriter) flush(batch []*logOp, lazy bool) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	err := w.send(ctx, batch, lazy)
	if err != nil && len(batch) > 1 {
		// One bad statement aborts the shared transaction: write each
		// alone so that only the bad one fails.
		for _, op := range batch {
			w.flush([]*logOp{op}, lazy)
		}
		return
	}
	for _, op := range batch {
		if err != nil {
			op.rows, op.err = 0, err
		}
		close(op.done)
	}
}

// send writes the batch in one round trip and one implicit transaction.
func (w *logWriter) send(ctx context.Context, batch []*logOp, lazy bool) error {
	b := &pgx.Batch{}
	if lazy {
		// Local to this implicit transaction: its commit does not wait for the WAL flush.
		b.Queue(`SELECT set_config('synchronous_commit', 'off', true)`)
	}
	for _, op := range batch {
		b.Queue(op.sql, op.args...)
	}
	res := w.db.SendBatch(ctx, b)
	if lazy {
		if _, err := res.Exec(); err != nil {
			res.Close()
			return err
		}
	}
	for _, op := range batch {
		tag, err := res.Exec()
		if err != nil {
			res.Close()
			return err
		}
		op.rows = tag.RowsAffected()
	}
	return res.Close()
}
