// shmq: a fault-tolerant message queue for processes on one Linux host.
// Include this header for the whole public API.
#pragma once

#include "shmq/consumer.hpp"
#include "shmq/dead_letter.hpp"
#include "shmq/error.hpp"
#include "shmq/producer.hpp"
#include "shmq/properties.hpp"
#include "shmq/queue.hpp"
#include "shmq/rpc.hpp"
#include "shmq/topic.hpp"
#include "shmq/wait.hpp"
#include "shmq/watchdog.hpp"
