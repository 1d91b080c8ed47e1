package store

import "fmt"

func validUser(u int64) error {
	if u < 1 {
		return fmt.Errorf("%w: user id %d < 1", ErrInvalid, u)
	}
	return nil
}

func validUsers(users []int64) error {
	if err := validBatch("users", len(users)); err != nil {
		return err
	}
	for _, u := range users {
		if err := validUser(u); err != nil {
			return err
		}
	}
	return nil
}

func validGroupID(g int64) error {
	if g < 1 {
		return fmt.Errorf("%w: group id %d < 1", ErrInvalid, g)
	}
	return nil
}

func validSeq(seq int64) error {
	if seq < 0 {
		return fmt.Errorf("%w: seq %d < 0", ErrInvalid, seq)
	}
	return nil
}

func validUserConv(u int64, convID string) error {
	if err := validUser(u); err != nil {
		return err
	}
	return validConv(convID)
}

func validTouch(users []int64, convID string, lastSeq int64) error {
	if err := validUsers(users); err != nil {
		return err
	}
	if err := validConv(convID); err != nil {
		return err
	}
	return validSeq(lastSeq)
}

func validDelivered(u int64, deviceKey, convID string, seq int64) error {
	if err := validUserConv(u, convID); err != nil {
		return err
	}
	if err := validDeviceKey(deviceKey); err != nil {
		return err
	}
	return validSeq(seq)
}

func validNewGroup(g Group) error {
	if g.ID < 0 {
		return fmt.Errorf("%w: group id %d < 0", ErrInvalid, g.ID)
	}
	if err := validUser(g.Owner); err != nil {
		return fmt.Errorf("owner: %w", err)
	}
	return validGroupName(g.Name)
}

func validMembers(g int64, users []int64) error {
	if err := validGroupID(g); err != nil {
		return err
	}
	return validUsers(users)
}

// validItems bounds an AppendTouch call: at most MaxBatch items and MaxBatch
// touched users in all.
func validItems(items []AppendItem) error {
	if err := validBatch("messages", len(items)); err != nil {
		return err
	}
	users := 0
	for _, it := range items {
		users += len(it.Users)
	}
	return validBatch("touched users", users)
}

// validItem checks one AppendTouch item.
func validItem(it AppendItem) error {
	if err := ValidateMsg(it.Msg); err != nil {
		return err
	}
	if err := validUsers(it.Users); err != nil {
		return fmt.Errorf("users: %w", err)
	}
	return nil
}
