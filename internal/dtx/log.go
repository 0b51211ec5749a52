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
type logWriter struct {
	db   *pgxpool.Pool
	ops  chan *logOp
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
	w := &logWriter{db: db, ops: make(chan *logOp, 4*maxLogBatch), stop: make(chan struct{})}
	for range flushers {
		w.wg.Go(w.flushLoop)
	}
	return w
}

var errLogClosed = errors.New("dtx: coordinator log closed")

// exec queues one statement and waits until it is committed.
func (w *logWriter) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	op := &logOp{sql: sql, args: args, done: make(chan struct{})}
	select {
	case w.ops <- op:
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

func (w *logWriter) flushLoop() {
	batch := make([]*logOp, 0, maxLogBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-w.ops:
			batch = append(batch, op)
		case <-w.stop:
			// Drain what is queued so that no caller waits forever.
			for {
				select {
				case op := <-w.ops:
					w.flush([]*logOp{op})
				default:
					return
				}
			}
		}
	more:
		for len(batch) < maxLogBatch {
			select {
			case op := <-w.ops:
				batch = append(batch, op)
			default:
				break more
			}
		}
		w.flush(batch)
	}
}

// flushTimeout bounds one group commit of the log: a database that hangs
// fails the writes (their callers treat them as unknown) instead of
// stalling the writer for good.
const flushTimeout = 15 * time.Second

func (w *logWriter) flush(batch []*logOp) {
	ctx, cancel := context.WithTimeout(context.Background(), flushTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, w.db, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, op := range batch {
			b.Queue(op.sql, op.args...)
		}
		res := tx.SendBatch(ctx, b)
		for _, op := range batch {
			tag, err := res.Exec()
			if err != nil {
				res.Close()
				return err
			}
			op.rows = tag.RowsAffected()
		}
		return res.Close()
	})
	if err != nil && len(batch) > 1 {
		// One bad statement aborts the shared transaction: write each
		// alone so that only the bad one fails.
		for _, op := range batch {
			w.flush([]*logOp{op})
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
