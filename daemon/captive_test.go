package daemon

// StepAside records nothing: the fake device has no policy rules.
func (d *fakeDevice) StepAside(bool) error { return nil }
