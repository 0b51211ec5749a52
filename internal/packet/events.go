package packet

import (
	"fmt"
	"time"

	"hongbao/internal/events"
	"hongbao/internal/money"
)

// Conversation is the conversation a packet is a message of: its group's,
// or the one-to-one conversation of sender and receiver.
func (p Packet) Conversation() string {
	if p.Kind == Single {
		return events.DirectConversation(p.Sender, p.Receiver)
	}
	return events.GroupConversation(p.Group)
}

// Payloads of the packet events (what the IM side shows).
type (
	sentPayload struct {
		Packet   int64        `json:"packet,string"`
		Kind     Kind         `json:"kind"`
		Sender   int64        `json:"sender"`
		Receiver int64        `json:"receiver,omitempty"`
		Group    int64        `json:"group,omitempty"`
		Amount   money.Amount `json:"amount"`
		Shares   int          `json:"shares"`
		Greeting string       `json:"greeting"`
	}
	// openedPayload is the shares of one packet taken in one commit: a
	// storm of grabs is a few events of many openings, not an event each.
	openedPayload struct {
		Packet int64     `json:"packet,string"`
		Sender int64     `json:"sender"`
		Opened []opening `json:"opened"`
	}
	opening struct {
		User   int64        `json:"user"`
		Seq    int          `json:"seq"`
		Amount money.Amount `json:"amount"`
	}
	finishedPayload struct {
		Packet   int64        `json:"packet,string"`
		Sender   int64        `json:"sender"`
		Amount   money.Amount `json:"amount"`
		Shares   int          `json:"shares"`
		BestUser int64        `json:"best_luck_user"`
		Best     money.Amount `json:"best_luck_amount"`
	}
	refundedPayload struct {
		Packet int64        `json:"packet,string"`
		Sender int64        `json:"sender"`
		Amount money.Amount `json:"amount"`
	}
)

// SentPayload is what a packet.sent event says.
func SentPayload(p Packet) any {
	return sentPayload{Packet: p.ID, Kind: p.Kind, Sender: p.Sender, Receiver: p.Receiver, Group: p.Group, Amount: p.Amount, Shares: p.Shares, Greeting: p.Greeting}
}

// openedEvents: who opened which packet in one commit, an event per packet
// (addressed to its sender), in the order of the batch.
func openedEvents(batch []*pending) []events.Event {
	var order []*live
	by := map[*live][]opening{}
	for _, pc := range batch {
		if _, ok := by[pc.lv]; !ok {
			order = append(order, pc.lv)
		}
		by[pc.lv] = append(by[pc.lv], opening{User: pc.c.User, Seq: pc.c.Seq, Amount: pc.c.Amount})
	}
	out := make([]events.Event, len(order))
	for i, lv := range order {
		os := by[lv]
		p := lv.p
		out[i] = events.New(fmt.Sprintf("packet.opened:%d:%d-%d", p.ID, os[0].Seq, os[len(os)-1].Seq), events.PacketOpened, p.Conversation(), p.Sender,
			openedPayload{Packet: p.ID, Sender: p.Sender, Opened: os}, time.Now())
	}
	return out
}

func finishedEvent(p Packet, bestUser int64, best money.Amount, at time.Time) events.Event {
	return events.New(fmt.Sprint("packet.finished:", p.ID), events.PacketFinished, p.Conversation(), p.Sender,
		finishedPayload{Packet: p.ID, Sender: p.Sender, Amount: p.Amount, Shares: p.Shares, BestUser: bestUser, Best: best}, at)
}

func refundedEvent(p Packet, amount money.Amount, at time.Time) events.Event {
	return events.New(fmt.Sprint("packet.refunded:", p.ID), events.PacketRefunded, p.Conversation(), p.Sender,
		refundedPayload{Packet: p.ID, Sender: p.Sender, Amount: amount}, at)
}
