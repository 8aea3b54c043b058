package seckill

// DurableMaxQueued is the cap of durable purchases waiting per node (tests).
const DurableMaxQueued = maxQueued
