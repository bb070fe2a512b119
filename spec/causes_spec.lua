-- lua/causes.lua: Q.850 hangup cause codes -> names and metric categories.
local causes = require "causes"

describe("causes", function()
  describe("name", function()
    it("names a known code given as a number", function()
      assert.are.equal("user busy", causes.name(17))
      assert.are.equal("normal clearing", causes.name(16))
      assert.are.equal("no circuit available", causes.name(34))
      assert.are.equal("unknown", causes.name(0))
      assert.are.equal("interworking, unspecified", causes.name(127))
    end)

    it("accepts the code as a string, as the Cause header carries it", function()
      assert.are.equal("call rejected", causes.name("21"))
      assert.are.equal("no answer", causes.name("19"))
    end)

    it("names a valid but unlisted code 'cause N'", function()
      assert.are.equal("cause 99", causes.name(99))
      assert.are.equal("cause 4", causes.name("4"))
    end)

    it("calls anything that is not an integer 0..127 'invalid cause'", function()
      for _, bad in ipairs({-1, 128, 16.5, "abc", "", "1 7"}) do
        assert.are.equal("invalid cause", causes.name(bad), "input " .. tostring(bad))
      end
      assert.are.equal("invalid cause", causes.name(nil))
      assert.are.equal("invalid cause", causes.name({}))
    end)
  end)

  describe("category", function()
    local function cat_of(list)
      local out = {}
      for _, c in ipairs(list) do out[#out + 1] = causes.category(c) end
      return out
    end

    it("puts normal clearing, normal unspecified and answered elsewhere in normal", function()
      assert.are.same({"normal", "normal", "normal"}, cat_of({16, 31, 26}))
    end)

    it("puts user busy in busy", function()
      assert.are.equal("busy", causes.category(17))
    end)

    it("puts no user responding, no answer and subscriber absent in no_answer", function()
      assert.are.same({"no_answer", "no_answer", "no_answer"}, cat_of({18, 19, 20}))
    end)

    it("puts call rejected in rejected", function()
      assert.are.equal("rejected", causes.category(21))
    end)

    it("puts unallocated, no route to destination, number changed, invalid format in bad_number", function()
      assert.are.same({"bad_number", "bad_number", "bad_number", "bad_number"}, cat_of({1, 3, 22, 28}))
    end)

    it("puts cause 0 in unknown", function()
      assert.are.equal("unknown", causes.category(0))
    end)

    it("puts network and equipment failures, named or not, in failure", function()
      assert.are.same({"failure", "failure", "failure", "failure", "failure", "failure", "failure", "failure"},
                      cat_of({2, 27, 34, 38, 41, 42, 111, 99}))
    end)

    it("reads string codes like numbers", function()
      assert.are.same({"busy", "normal", "failure"}, cat_of({"17", "16", "34"}))
    end)

    it("puts invalid input in unknown", function()
      assert.are.same({"unknown", "unknown", "unknown", "unknown", "unknown"},
                      cat_of({-1, 128, 16.5, "abc", ""}))
      assert.are.equal("unknown", causes.category(nil))
    end)

    it("only ever returns a value listed in causes.categories", function()
      local listed = {}
      for _, c in ipairs(causes.categories) do listed[c] = true end
      assert.are.same({"normal", "busy", "no_answer", "rejected", "bad_number", "failure", "unknown"},
                      causes.categories)
      for code = -2, 130 do
        assert.is_true(listed[causes.category(code)] == true, "code " .. code)
      end
    end)
  end)

  describe("is_failure", function()
    it("is true for network failures", function()
      assert.is_true(causes.is_failure(34))
      assert.is_true(causes.is_failure("38"))
      assert.is_true(causes.is_failure(127))
    end)

    it("is false for normal, busy, unanswered, rejected, bad numbers and unknown", function()
      for _, code in ipairs({16, 31, 17, 18, 19, 21, 1, 28, 0}) do
        assert.is_false(causes.is_failure(code), "code " .. code)
      end
    end)

    it("is false for invalid input", function()
      assert.is_false(causes.is_failure(nil))
      assert.is_false(causes.is_failure("garbage"))
      assert.is_false(causes.is_failure(500))
    end)
  end)
end)
