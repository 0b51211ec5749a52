package demo

import (
	"testing"

	"hongbao/internal/hbtest"
)

func TestMain(m *testing.M) { hbtest.Main(m) }
