package channel_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"hongbao/internal/channel"
)

func signedPost(c *channel.Client, path string, out any) error {
	return signedPostBody(c, path, "", out)
}

// signedPostBody calls a control endpoint of the simulator, as the test's
// payer or operator.
func signedPostBody(c *channel.Client, path, body string, out any) error {
	req, _ := http.NewRequest("POST", c.URL+path, bytes.NewReader([]byte(body)))
	channel.Sign(req.Header, c.Secret, []byte(body), time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %d", path, resp.StatusCode)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
