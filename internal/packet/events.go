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
	openedPayload struct {
		Packet int64        `json:"packet,string"`
		Claim  int64        `json:"claim,string"`
		User   int64        `json:"user"`
		Seq    int          `json:"seq"`
		Amount money.Amount `json:"amount"`
		Sender int64        `json:"sender"`
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

// openedEvent: someone opened p (addressed to its sender).
func openedEvent(p Packet, c Claim) events.Event {
	return events.New(fmt.Sprint("packet.opened:", c.ID), events.PacketOpened, p.Conversation(), p.Sender,
		openedPayload{Packet: p.ID, Claim: c.ID, User: c.User, Seq: c.Seq, Amount: c.Amount, Sender: p.Sender}, c.At)
}

func finishedEvent(p Packet, bestUser int64, best money.Amount, at time.Time) events.Event {
	return events.New(fmt.Sprint("packet.finished:", p.ID), events.PacketFinished, p.Conversation(), p.Sender,
		finishedPayload{Packet: p.ID, Sender: p.Sender, Amount: p.Amount, Shares: p.Shares, BestUser: bestUser, Best: best}, at)
}

func refundedEvent(p Packet, amount money.Amount, at time.Time) events.Event {
	return events.New(fmt.Sprint("packet.refunded:", p.ID), events.PacketRefunded, p.Conversation(), p.Sender,
		refundedPayload{Packet: p.ID, Sender: p.Sender, Amount: amount}, at)
}
