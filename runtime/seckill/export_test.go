package seckill

// DurableMaxQueued is the cap of durable purchases waiting per node (tests).
const DurableMaxQueued = maxQueued

// SeesPaused says whether the pod's state has the pause switch on.
func (s *Server) SeesPaused() bool { return s.state.paused.Load() }

// QueueOnRedisClock says whether the server's waiting room follows Redis's
// clock (queue.Config.RedisClock).
func (s *Server) QueueOnRedisClock() bool { return s.queueCfg.RedisClock }

// RefusalGrace is how long an admission stays live after a refusal of one
// SKU while another is on sale (tests).
const RefusalGrace = refusalGrace
